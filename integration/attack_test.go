package integration

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kfv/event"
	"kfv/guest"
)

// Constants shared with integration/implant/implant.c.
const (
	implantSecretOffset  = 1 << 20                // read-secret copies the secret here in the VM's disk
	implantOtherDiskMark = "KFV-IMPLANT-WAS-HERE" // other-disk writes this at offset 0
	implantHostMemory    = "KFV-HOST-MEMORY"      // kvm-memslot's page of QEMU memory
)

// attack is one payload of the test implant. Each runs twice, with the
// implant loaded into real QEMU: on bare QEMU, where its effect must show
// (otherwise the kfv run would prove nothing), and under kfv-run in
// enforce mode with the built-in profile, where the effect must be
// absent, the event stream must hold a deny of the expected call by the
// very thread that ran the payload, and the VM must still run.
type attack struct {
	name string
	// payload is the implant's payload the run triggers; "" is name. A
	// variant runs a payload again under another configuration.
	payload string
	// port: trigger through vCPU port I/O (the raw trigger guest, KVM
	// only) instead of the Linux guest's block writes.
	port bool
	// need says why this host cannot demonstrate the payload, or "".
	need func() string
	// setup prepares the host side of one run and returns the payload's
	// argument and how to observe the effect.
	setup func(t *testing.T, r *attackRun) (arg string, effect effectFunc)
	// denied: under kfv, for each group, a deny of one of its syscalls
	// by the payload's thread.
	denied [][]string
	// replacesQEMU: on bare QEMU the payload execs, so QEMU is gone and
	// there is no QMP to ask afterwards.
	replacesQEMU bool
	// qargs are extra QEMU arguments for the VM; @RUNDIR@ in them is the
	// run's temporary directory.
	qargs []string
	// env is extra environment for QEMU (and the implant).
	env []string
	// main: the payload runs in QEMU's main thread ("main-" + payload),
	// handed over by the thread the trigger reached, as a payload that
	// hijacked a main-loop callback would.
	main bool
	// emulator: the kfv run starts QEMU through the emulator link
	// kfv-qemu-system-x86_64 (a detached supervisor, as under libvirt)
	// instead of kfv-run.
	emulator bool
	// check, if set, asserts more of a kfv run once QEMU has quit, with
	// its events.
	check func(t *testing.T, r *attackRun, evs []event.Event)
	// kfvFlags, if set, runs both cases under kfv-run with these flags:
	// the "bare" one (wall false) must show the effect, the kfv one
	// (wall true) must not. It tests a layer behind kfv's decisions (the
	// Landlock wall) with a profile that lets the payload's calls
	// through.
	kfvFlags func(t *testing.T, r *attackRun, wall bool) []string
	// audit runs the kfv case in audit mode: the payload must take
	// effect as bare (audit changes nothing), and check gets the events.
	audit bool
}

// effectFunc observes a payload's effect from outside the payload's
// thread: seen of want parts took effect, and what was seen. A bare run
// needs seen == want, a kfv run seen == 0.
type effectFunc func() (seen, want int, what string)

// attackRun is one run of one payload.
type attackRun struct {
	kfv     bool
	dir     string // the run's temporary directory; QEMU's disk, QMP socket and events are here
	disk    string // the VM's disk image (block trigger)
	qemuPID int
	p       *proc
	report  implantReport
	// qargs are extra QEMU arguments setup adds for this run (a share
	// in the run's directory).
	qargs []string
	// spid is the emulator model's supervisor (kfv runs of an emulator
	// attack), found before the payload runs.
	spid       int
	spidReaped bool
}

// kvmMemslotSetup: the raw guest peeks at the page kvm-memslot maps at
// RawPeekAddr and prints what it finds; the effect is QEMU's page there.
func kvmMemslotSetup(t *testing.T, r *attackRun) (string, effectFunc) {
	return strconv.FormatUint(guest.RawPeekAddr, 16), func() (int, int, string) {
		out := r.p.stdout.String()
		line := out
		if i := strings.Index(out, guest.RawTriggerPeek); i >= 0 {
			line = out[i:]
			if j := strings.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
		}
		return one(strings.Contains(out, implantHostMemory), fmt.Sprintf("guest console: %q", line))
	}
}

func one(ok bool, what string) (int, int, string) {
	if ok {
		return 1, 1, what
	}
	return 0, 1, what
}

// reported is the effect of payloads whose only witness is QEMU's own
// memory (rwx, text-patch, procmem-write, bpf): the implant's report of
// what it saw, checked for the evidence it must contain.
func reported(r *attackRun, evidence string) effectFunc {
	return func() (int, int, string) {
		ok := r.report.Result == "ok" && strings.Contains(r.report.Detail, evidence)
		return one(ok, fmt.Sprintf("implant: result=%s detail=%s", r.report.Result, r.report.Detail))
	}
}

func markerFile(r *attackRun) (string, effectFunc) {
	marker := filepath.Join(r.dir, "marker")
	return marker, func() (int, int, string) {
		_, err := os.Stat(marker)
		return one(err == nil, fmt.Sprintf("marker %s: stat err=%v", marker, err))
	}
}

var attacks = []attack{
	{
		name:         "exec-shell",
		denied:       [][]string{{"execve", "execveat"}},
		replacesQEMU: true,
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			return markerFile(r)
		},
	},
	{
		name:   "read-secret",
		denied: [][]string{{"openat", "open", "openat2"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			// Outside every path of the VM's command line.
			secretPath := filepath.Join(t.TempDir(), "host-secret")
			secret := "KFV-SECRET-" + randomHex(t, 8)
			if err := os.WriteFile(secretPath, []byte(secret), 0o600); err != nil {
				t.Fatalf("write secret: %v", err)
			}
			return secretPath, func() (int, int, string) {
				got := make([]byte, len(secret))
				f, err := os.Open(r.disk)
				if err == nil {
					_, err = f.ReadAt(got, implantSecretOffset)
					err = errors.Join(err, f.Close())
				}
				if err != nil {
					t.Fatalf("read the VM's disk: %v", err)
				}
				return one(string(got) == secret, fmt.Sprintf("disk at 0x%x: %q (secret %q)", implantSecretOffset, got, secret))
			}
		},
	},
	{
		name: "connect-back",
		// The payload's chain is socket then connect: a profile may
		// stop it at either step.
		denied: [][]string{{"socket", "connect"}},
		setup:  connectBackSetup,
	},
	{
		name: "renamed-connect",
		// connect-back from a block worker that took the main thread's
		// name, in a VM with user-mode networking, where the main loop
		// (slirp) may reach the host's loopback: a name must not buy
		// that right.
		denied: [][]string{{"connect"}},
		qargs:  []string{"-netdev", "user,id=kfvnet", "-device", "virtio-net-pci,netdev=kfvnet"},
		setup:  connectBackSetup,
	},
	{
		name: "bind-shell",
		// socket, bind, listen: a profile may stop it at any step.
		denied: [][]string{{"socket", "bind", "listen"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			addr := freeAddr(t)
			return addr, func() (int, int, string) {
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err == nil {
					c.Close()
				}
				return one(err == nil, fmt.Sprintf("dial %s: err=%v", addr, err))
			}
		},
	},
	{
		name:   "raw-sniff",
		denied: [][]string{{"socket"}},
		need: func() string {
			fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_ALL)))
			if err != nil {
				return "socket(AF_PACKET, SOCK_RAW) fails for this user here (needs CAP_NET_RAW): " + err.Error()
			}
			if err := syscall.Close(fd); err != nil {
				return "close packet socket: " + err.Error()
			}
			return ""
		},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			return "", func() (int, int, string) {
				n, what := packetSockets(t, r.qemuPID)
				return one(n > 0, what)
			}
		},
	},
	{
		name:   "rwx",
		denied: [][]string{{"mmap"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			return "", reported(r, "returned=42")
		},
	},
	{
		name:   "text-patch",
		denied: [][]string{{"mprotect"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			return "", reported(r, "restored")
		},
	},
	{
		name:   "procmem-write",
		denied: [][]string{{"openat", "open", "openat2"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			return "", reported(r, "through /proc/self/mem")
		},
	},
	{
		name:   "kvm-memslot",
		port:   true,
		denied: [][]string{{"ioctl"}},
		need:   kvmProblem,
		setup:  kvmMemslotSetup,
	},
	{
		// The same slot over QEMU's memory, from a VM whose RAM is a
		// memory-backend-file: the slots kfv admits over that file's
		// mappings (vm-memory-backend-slots) admit nothing else.
		name:    "kvm-memslot-file-ram",
		payload: "kvm-memslot",
		qargs: []string{"-object", "memory-backend-file,id=kfvram,size=1M,share=on,mem-path=@RUNDIR@",
			"-numa", "node,memdev=kfvram"},
		port:   true,
		denied: [][]string{{"ioctl"}},
		need:   kvmProblem,
		setup:  kvmMemslotSetup,
	},
	{
		name:   "neighbor-signal",
		denied: [][]string{{"kill"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			n := startNeighbor(t)
			return strconv.Itoa(n.cmd.Process.Pid), func() (int, int, string) {
				dead := waitFor(2*time.Second, n.exited)
				return one(dead, fmt.Sprintf("neighbour %d dead=%t (%v)", n.cmd.Process.Pid, dead, n.err))
			}
		},
	},
	{
		name:   "neighbor-peek",
		denied: [][]string{{"process_vm_readv"}, {"ptrace"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			n := startNeighbor(t)
			pid := n.cmd.Process.Pid
			// The first mapping of sleep starts with its ELF header.
			maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
			if err != nil {
				t.Fatalf("read the neighbour's maps: %v", err)
			}
			start, _, ok := strings.Cut(string(maps), "-")
			if !ok {
				t.Fatalf("neighbour's maps: %q", maps)
			}
			return fmt.Sprintf("%d:%s", pid, start), func() (int, int, string) {
				seen := 0
				if r.report.Result == "ok" && strings.Contains(r.report.Detail, "process_vm_readv=ok:7f454c46") {
					seen++
				}
				if r.report.Result == "ok" && strings.Contains(r.report.Detail, "ptrace_attach=ok") {
					seen++
				}
				return seen, 2, fmt.Sprintf("implant: result=%s detail=%s", r.report.Result, r.report.Detail)
			}
		},
	},
	{
		name:   "fork-exec",
		denied: [][]string{{"clone", "clone3", "fork", "vfork"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			return markerFile(r)
		},
	},
	{
		name:   "other-disk",
		denied: [][]string{{"openat", "open", "openat2"}},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			// Another VM's image: a file this VM's command line never names.
			other := filepath.Join(t.TempDir(), "other-vm.img")
			if err := os.WriteFile(other, make([]byte, 64<<10), 0o600); err != nil {
				t.Fatalf("write other image: %v", err)
			}
			return other, func() (int, int, string) {
				b, err := os.ReadFile(other)
				if err != nil {
					t.Fatalf("read other image: %v", err)
				}
				head := b[:len(implantOtherDiskMark)]
				return one(string(head) == implantOtherDiskMark, fmt.Sprintf("other image starts with %q", head))
			}
		},
	},
	{
		name:   "host-mount",
		denied: [][]string{{"mount"}},
		need:   mountProbe,
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			mnt := filepath.Join(r.dir, "mnt")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatalf("mkdir: %v", err)
			}
			t.Cleanup(func() {
				for mounted(t, mnt) {
					if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
						t.Errorf("unmount %s: %v", mnt, err)
						return
					}
				}
			})
			return mnt, func() (int, int, string) {
				m := mounted(t, mnt)
				return one(m, fmt.Sprintf("%s in /proc/self/mountinfo: %t", mnt, m))
			}
		},
	},
	{
		name:   "bpf",
		denied: [][]string{{"bpf"}},
		need:   bpfProbe,
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			return "", reported(r, "BPF_PROG_LOAD) returned fd=")
		},
	},
}

// TestAttack runs every payload of the test implant (integration/implant)
// inside real QEMU, triggered by a guest through a device, on bare QEMU
// and under kfv-run. See the attack type for what each run asserts.
func TestAttack(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	if testing.Short() {
		t.Skip("boots QEMU twice per payload: skipped with -short")
	}
	for _, c := range attacks {
		t.Run(c.name, func(t *testing.T) {
			if c.need != nil {
				if why := c.need(); why != "" {
					t.Skipf("the bare run cannot demonstrate %s: %s", c.name, why)
				}
			}
			t.Run("bare", func(t *testing.T) { runAttack(t, qemu, c, false) })
			t.Run("kfv", func(t *testing.T) { runAttack(t, qemu, c, true) })
		})
	}
}

func runAttack(t *testing.T, qemu string, c attack, kfv bool) {
	began := time.Now()
	implant := buildImplant(t)
	dir := t.TempDir()
	r := &attackRun{kfv: kfv, dir: dir, disk: filepath.Join(dir, "disk.img")}
	arg, effect := c.setup(t, r)
	payload := c.payload
	if payload == "" {
		payload = c.name
	}
	env := c.env
	if c.main {
		payload = "main-" + payload
		env = append(append([]string(nil), env...), "KFV_IMPLANT_MAIN=1")
	}

	var qargs []string
	var doneMarker string
	if c.port {
		img, err := guest.BuildRawTrigger(guestDir, payload, arg)
		if err != nil {
			t.Fatalf("build raw trigger guest: %v", err)
		}
		qargs = guest.RawTriggerArgs(img, "kvm")
		doneMarker = strings.TrimSpace(guest.RawTriggerDone)
	} else {
		accel, err := guest.LinuxAccel()
		if err != nil {
			t.Fatal(err)
		}
		if accel == "kvm" {
			if p := kvmProblem(); p != "" {
				t.Skipf("%s=kvm but %s: unset it to run the Linux guest under TCG", guest.LinuxAccelEnv, p)
			}
		}
		l := attackLinuxGuest(t)
		if err := os.WriteFile(r.disk, nil, 0o600); err != nil {
			t.Fatalf("create disk: %v", err)
		}
		if err := os.Truncate(r.disk, 16<<20); err != nil {
			t.Fatalf("size disk: %v", err)
		}
		// The guest idles after the trigger until the test quits QEMU.
		words, err := guest.TriggerCmdline(payload, arg, 600)
		if err != nil {
			t.Fatal(err)
		}
		qargs = append(guest.LinuxArgs(l, accel, guest.WorkloadTrigger, words...), guest.DiskArgs(r.disk, "raw")...)
		doneMarker = "KFV-RESULT workload=" + guest.WorkloadTrigger
	}
	sock := filepath.Join(dir, "qmp.sock")
	events := filepath.Join(dir, "events.jsonl")
	// debug-threads=on: QEMU names its threads, so the events say which
	// one made each call (worker, CPU 0/KVM).
	for _, a := range c.qargs {
		qargs = append(qargs, strings.ReplaceAll(a, "@RUNDIR@", dir))
	}
	qargs = append(qargs, r.qargs...)
	qargs = append(qargs, "-name", "kfv-test,debug-threads=on", "-qmp", "unix:"+sock+",server=on,wait=off")
	argv := append([]string{qemu}, qargs...)
	env = append([]string{"LD_PRELOAD=" + implant}, env...)
	emulator := kfv && c.emulator
	switch {
	case emulator:
		// kfv.toml's defaults: enforce, the built-in profile. The
		// process started becomes QEMU; the supervisor is its sibling.
		edir, link := emulatorLink(t)
		cfg, evdir := writeKfvConfig(t, edir, "")
		events = filepath.Join(evdir, "kfv-test.jsonl")
		argv = append([]string{link}, qargs...)
		env = append(env, "KFV_CONFIG="+cfg)
	case c.kfvFlags != nil:
		argv = kfvArgs(events, c.kfvFlags(t, r, kfv), qemu, qargs...)
	case kfv && c.audit:
		argv = kfvArgs(events, []string{"--mode", "audit", "--profile", "qemu"}, qemu, qargs...)
	case kfv:
		argv = kfvArgs(events, []string{"--mode", "enforce", "--profile", "qemu"}, qemu, qargs...)
	}
	p := startEnv(t, argv, env...)
	r.p = p
	r.qemuPID = p.cmd.Process.Pid
	switch {
	case emulator:
		if !waitFor(10*time.Second, func() bool { r.spid = supervisorOf(r.qemuPID); return r.spid != 0 }) {
			t.Fatalf("no kfv supervisor follows QEMU %d\nstderr:\n%s", r.qemuPID, p.stderr)
		}
		// The supervisor is this test's child (CLONE_PARENT): reap it.
		t.Cleanup(func() {
			if !r.spidReaped {
				syscall.Kill(r.spid, syscall.SIGKILL)
				syscall.Wait4(r.spid, nil, 0, nil)
			}
		})
	case kfv || c.kfvFlags != nil:
		r.qemuPID = childPID(t, p.cmd.Process.Pid)
	}

	// The payload has run when the guest's write or port output has
	// completed, that is when the guest prints its marker; a bare
	// exec-shell replaces QEMU instead.
	if !waitFor(4*time.Minute, func() bool { return strings.Contains(p.stdout.String(), doneMarker) || p.exited() }) {
		t.Fatalf("no %q on the console within 4 minutes\nconsole:\n%s\nstderr:\n%s", doneMarker, lastLines(p.stdout.String(), 30), p.stderr)
	}
	if !kfv && c.replacesQEMU {
		p.wait(t, 30*time.Second)
	}
	// The implant reports on QEMU's stderr before the guest goes on, but
	// stdout and stderr are two pipes read apart: the console's marker
	// may be read before the report line is.
	waitFor(5*time.Second, func() bool { return parseImplant(p.stderr.String(), payload).Result != "" || p.exited() })
	r.report = parseImplant(p.stderr.String(), payload)
	if !r.report.loadedIn(r.qemuPID) {
		t.Fatalf("the implant did not load into QEMU (pid %d), so this run proves nothing; implant lines %q\nstderr:\n%s", r.qemuPID, r.report.Lines, p.stderr)
	}
	if r.report.Result == "" {
		t.Fatalf("the implant reported no result for %s: the trigger did not reach it\nconsole:\n%s\nstderr:\n%s", payload, lastLines(p.stdout.String(), 30), p.stderr)
	}
	seen, want, what := effect()
	t.Logf("payload ran in thread %d %q: result=%s detail=%s", r.report.TID, r.report.Thread, r.report.Result, r.report.Detail)
	t.Logf("effect: %d of %d: %s", seen, want, what)

	if !kfv {
		if seen != want {
			t.Errorf("bare QEMU: the payload's effect is missing (%s): the kfv run would prove nothing\nstderr:\n%s", what, p.stderr)
		}
		if c.replacesQEMU {
			t.Logf("%s took %v", t.Name(), time.Since(began).Round(100*time.Millisecond))
			return
		}
		if r.report.Result != "ok" {
			t.Errorf("bare QEMU: implant result=%s, want ok: %s", r.report.Result, r.report.Detail)
		}
		quitAttack(t, r, sock)
		t.Logf("%s took %v", t.Name(), time.Since(began).Round(100*time.Millisecond))
		return
	}

	if c.audit {
		if seen != want {
			t.Errorf("audit mode: the payload's effect is missing (%s): audit mode must change nothing", what)
		}
		quitAttack(t, r, sock)
		if c.check != nil {
			c.check(t, r, readEvents(t, events))
		}
		return
	}
	if seen != 0 {
		t.Errorf("under kfv-run the payload took effect: %s", what)
	}
	if emulator && !running(r.spid) {
		// QEMU's inspected calls now fail with ENOSYS: its monitors
		// accept nothing, and the events end where the supervisor died.
		t.Fatalf("the supervisor %d is gone: QEMU %d runs unsupervised\nimplant: result=%s detail=%s", r.spid, r.qemuPID, r.report.Result, r.report.Detail)
	}
	// (Behind a wall the payload's calls may all succeed and their
	// effect still be stopped, as a SIGIO the kernel does not deliver:
	// the effect decides.)
	if r.report.Result != "fail" && c.kfvFlags == nil {
		t.Errorf("under kfv-run the implant says result=%s, want fail: %s", r.report.Result, r.report.Detail)
	}
	// The policy for these payloads is to refuse the call and let the
	// VM run: QEMU must be there and answer QMP.
	if p.exited() {
		t.Fatalf("QEMU is gone after the attempt, want it running\nstderr:\n%s", p.stderr)
	}
	quitAttack(t, r, sock)

	var evs []event.Event
	if emulator {
		// The supervisor ends after QEMU, with its last events.
		ws := reap(t, r.spid, 20*time.Second)
		r.spidReaped = true
		if ws.Signaled() {
			t.Errorf("the supervisor ended by %v, want it alive until QEMU quit", ws.Signal())
			evs = readKilledEvents(t, events)
		} else {
			evs = readEvents(t, events)
		}
	} else {
		evs = readEvents(t, events)
	}
	for _, group := range c.denied {
		var hit *event.Event
		for i, e := range evs {
			if e.Kind == event.KindDecision && e.Verdict == "deny" && e.TID == r.report.TID && contains(group, e.Syscall) {
				hit = &evs[i]
				break
			}
		}
		if hit == nil {
			t.Errorf("no deny of %s by the payload's thread %d (%q) in the event stream:\n%s", strings.Join(group, "/"), r.report.TID, r.report.Thread, dumpEvents(evs))
			continue
		}
		t.Logf("denied: %s thread=%q layer=%s hrsc=%s rule=%s errno=%s applied=%s args=%s", hit.Syscall, hit.Thread, hit.Layer, hit.HRSC, hit.Rule, hit.Errno, hit.Applied, hit.Args)
		if hit.Applied != "deny" || hit.Rule == "" {
			t.Errorf("deny of %s not applied or without a rule: %+v", hit.Syscall, *hit)
		}
	}
	if c.check != nil {
		c.check(t, r, evs)
	}
	t.Logf("%s took %v", t.Name(), time.Since(began).Round(100*time.Millisecond))
}

// connectBackSetup listens on the loopback for connect-back and
// renamed-connect; the effect is the implant's line received.
func connectBackSetup(t *testing.T, r *attackRun) (string, effectFunc) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	got := &lockedBuffer{}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return // closed by the cleanup
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n') // whatever arrived is the evidence
		got.Write([]byte("connection from " + c.RemoteAddr().String() + ": " + line))
	}()
	return ln.Addr().String(), func() (int, int, string) {
		ok := waitFor(2*time.Second, func() bool { return strings.Contains(got.String(), "kfv-implant connect-back") })
		return one(ok, fmt.Sprintf("listener %s received %q", ln.Addr(), got.String()))
	}
}

// quitAttack checks that the VM still runs and answers QMP, then quits it.
func quitAttack(t *testing.T, r *attackRun, sock string) {
	t.Helper()
	q := dialQMP(t, sock, 20*time.Second)
	if st := q.started(t); st != "running" {
		t.Errorf("VM status %q after the payload, want running", st)
	}
	if _, err := q.exec("quit", nil); err != nil {
		t.Logf("quit: %v", err) // QEMU may close the socket before answering
	}
	r.p.wait(t, 30*time.Second)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func lastLines(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random: %v", err)
	}
	return hex.EncodeToString(b)
}

// freeAddr returns 127.0.0.1:PORT for a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	return addr
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSockets counts the AF_PACKET sockets among pid's fds.
func packetSockets(t *testing.T, pid int) (int, string) {
	b, err := os.ReadFile("/proc/net/packet")
	if err != nil {
		t.Fatalf("read /proc/net/packet: %v", err)
	}
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 0 {
			inodes[f[len(f)-1]] = true
		}
	}
	fds, err := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	if err != nil {
		t.Fatalf("list fds: %v", err)
	}
	var found []string
	for _, fd := range fds {
		l, err := os.Readlink(fd)
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := strings.CutPrefix(l, "socket:["); ok && inodes[strings.TrimSuffix(ino, "]")] {
			found = append(found, filepath.Base(fd)+"="+l)
		}
	}
	return len(found), fmt.Sprintf("QEMU %d packet sockets: %v", pid, found)
}

// startNeighbor starts another process of the host (a sleep) and kills
// it when the test ends.
func startNeighbor(t *testing.T) *proc {
	return start(t, []string{"sleep", "300"})
}

// mountProbe says why the test process cannot mount a tmpfs, or "".
func mountProbe() string {
	if os.Geteuid() != 0 {
		return "mounting needs root"
	}
	dir, err := os.MkdirTemp("", "kfv-mount-probe-")
	if err != nil {
		return "mount probe: " + err.Error()
	}
	defer os.Remove(dir)
	if err := syscall.Mount("none", dir, "tmpfs", 0, ""); err != nil {
		return "mount tmpfs fails here: " + err.Error()
	}
	if err := syscall.Unmount(dir, 0); err != nil {
		return "unmount probe: " + err.Error()
	}
	return ""
}

// mounted says whether dir is a mount point (in /proc/self/mountinfo).
func mounted(t *testing.T, dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if f := strings.Fields(string(line)); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}
