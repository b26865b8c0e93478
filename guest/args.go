package guest

import (
	"fmt"
	"os"
	"strings"
)

// LinuxAccelEnv names the environment variable that chooses the Linux
// guest's accelerator: "tcg" (the default) or "kvm".
const LinuxAccelEnv = "KFV_LINUX_ACCEL"

// LinuxAccel returns the accelerator for the Linux guest from
// KFV_LINUX_ACCEL, "tcg" when unset. A stock Debian kernel hangs in
// early boot under kvm_pvm, so the default stays TCG; set kvm on hosts
// with a real KVM.
func LinuxAccel() (string, error) {
	v := strings.TrimSpace(os.Getenv(LinuxAccelEnv))
	switch v {
	case "":
		return "tcg", nil
	case "tcg", "kvm":
		return v, nil
	}
	return "", fmt.Errorf("%s=%q: want kvm or tcg", LinuxAccelEnv, v)
}

// Workloads the Linux guest's /init knows (kfv.workload=NAME).
const (
	WorkloadBoot = "boot" // markers only
	WorkloadDisk = "disk" // kfv.size MiB to /dev/vda (kfv.dev=NAME: /dev/NAME) and back (needs DiskArgs)
	WorkloadNet  = "net"  // kfv.size MiB to kfv.host:kfv.port with nc from kfv.ip (needs NetArgs)
	WorkloadIdle = "idle" // sleep kfv.seconds
)

// LinuxCmdline is the kernel command line for workload; extra words
// (e.g. "kfv.size=64") are appended as given.
func LinuxCmdline(workload string, extra ...string) string {
	words := []string{"console=ttyS0", "quiet", "panic=-1", "kfv.workload=" + workload}
	return strings.Join(append(words, extra...), " ")
}

// LinuxArgs returns QEMU arguments (without the binary) that boot l with
// accel ("tcg" or "kvm") and workload. The serial console is on stdio
// and the guest powers off at the end, so QEMU exits 0; a kernel panic
// exits too (panic=-1 with -no-reboot). Add DiskArgs or NetArgs for the
// disk and net workloads. Machine and CPU choices are explained in doc.go.
func LinuxArgs(l *Linux, accel, workload string, extraCmdline ...string) []string {
	cpu := "max"
	if accel == "kvm" {
		cpu = "host,-arch-capabilities"
	}
	return []string{
		"-accel", accel,
		"-machine", "q35",
		"-cpu", cpu,
		"-smp", "1",
		"-m", "256",
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-no-reboot",
		"-kernel", l.Kernel,
		"-initrd", l.Initrd,
		"-append", LinuxCmdline(workload, extraCmdline...),
		"-serial", "stdio",
	}
}

// DiskArgs attaches image (format "raw" or "qcow2") as the guest's
// /dev/vda on virtio-blk.
func DiskArgs(image, format string) []string {
	return []string{
		"-drive", fmt.Sprintf("file=%s,format=%s,if=none,id=kfvdisk,cache=writeback", image, format),
		"-device", "virtio-blk-pci,drive=kfvdisk",
	}
}

// NetArgs gives the guest eth0 on virtio-net with QEMU user networking
// (slirp): the guest is 10.0.2.15 and reaches the host's 127.0.0.1 as
// 10.0.2.2.
func NetArgs() []string {
	return []string{
		"-netdev", "user,id=kfvnet",
		"-device", "virtio-net-pci,netdev=kfvnet",
	}
}
