package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// What kfv adds to QEMU's command line (QEMU sees its arguments "plus what
// kfv must add", README.md): names for QEMU's threads, so that
// calls are attributed to the vCPU, worker or monitor that made them, and
// a private QMP monitor through which kfv carries out reactions. The user's
// own monitors are untouched.

// isQEMU reports whether a program name is a QEMU system emulator
// (qemu-system-*, qemu-kvm, kvm), whose command line kfv understands and
// extends. kfv-run can supervise any program (benchmarks and tests use
// small ones); for others it adds nothing and derives no resources.
func isQEMU(argv0 string) bool {
	b := filepath.Base(argv0)
	return strings.HasPrefix(b, "qemu-system-") || b == "qemu-kvm" || b == "kvm" || strings.HasPrefix(b, "kfv-qemu-")
}

// withDebugThreads makes QEMU name its threads (-name ...,debug-threads=on),
// keeping any -name the user gave.
func withDebugThreads(args []string) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] != "-name" && out[i] != "--name" {
			continue
		}
		if strings.Contains(out[i+1], "debug-threads=") {
			return out // the user chose
		}
		out[i+1] += ",debug-threads=on"
		return out
	}
	return append(out, "-name", "debug-threads=on")
}

// monitorChardev is the chardev id of kfv's private monitor in QEMU.
const monitorChardev = "kfv-monitor"

// withMonitor adds kfv's private QMP monitor to QEMU's arguments: a
// chardev over a connected socket QEMU inherits as fd, one end of a
// socket pair whose other end kfv keeps (monitorPair). No path: nothing
// is left behind whatever ends kfv, and no other process can find the
// monitor.
func withMonitor(args []string, fd int) []string {
	return append(append([]string(nil), args...),
		"-chardev", fmt.Sprintf("socket,id=%s,fd=%d,server=off", monitorChardev, fd),
		"-mon", "chardev="+monitorChardev+",mode=control")
}

// monitorPair makes the socket pair of kfv's private monitor: kfv's end
// and QEMU's, both close-on-exec (QEMU's end is handed over on purpose).
func monitorPair() (kfv, qemu *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("kfv's private monitor: %w", os.NewSyscallError("socketpair", err))
	}
	return os.NewFile(uintptr(fds[0]), "kfv-monitor"), os.NewFile(uintptr(fds[1]), "kfv-monitor-qemu"), nil
}

// withHeldStart makes QEMU wait, with its guest stopped, until kfv's
// private monitor is up: kfv adds -S and resumes the guest (cont) once
// its monitor has answered. A guest that ended while kfv's QMP
// connection was still being set up could hang QEMU 10.0 in its exit
// (monitor_cleanup waits for a dispatcher that never finishes; kfv had
// it 1 run in 10 with a raw guest that exits at once). The line is left
// as it is when the user holds the guest already (-S: libvirt always
// does, and resumes it itself) or it waits for an incoming migration
// (-incoming: QEMU starts the guest when the migration ends, and -S
// would keep it stopped). held says whether kfv added -S.
func withHeldStart(args []string) (out []string, held bool) {
	for _, a := range args {
		switch a {
		case "-S", "--S", "-incoming", "--incoming":
			return args, false
		}
	}
	return append(append([]string(nil), args...), "-S"), true
}

// withIncomingDefer makes QEMU wait for an incoming migration started over
// QMP (migrate-incoming), replacing any -incoming the user gave: used to
// restore a checkpoint.
func withIncomingDefer(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if (args[i] == "-incoming" || args[i] == "--incoming") && i+1 < len(args) {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return append(out, "-incoming", "defer")
}
