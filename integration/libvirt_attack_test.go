package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kfv/event"
	"kfv/guest"
)

// The attack suite's implant (README.md) in a libvirt domain: the
// domain's XML loads it into QEMU with <qemu:env name='LD_PRELOAD'/>, the
// Linux guest's trigger workload sends it a payload through its virtio
// disk, and the payload runs in QEMU's block worker thread, as libvirt's
// unprivileged QEMU user, beside libvirt's own confinement of QEMU
// (-sandbox on,...,spawn=deny, stacked on kfv's filter).
//
// Each payload runs twice: in a domain whose <emulator> is plain
// qemu-system-x86_64 (bare: what the payload achieves under libvirt
// alone) and in one whose <emulator> is the kfv link (kfv.toml: enforce,
// built-in profile).

// libvirtAttack is one payload and what each run must show.
type libvirtAttack struct {
	payload string
	// setup prepares the host side and returns the payload's argument
	// and how to see its effect from outside QEMU (seen: it took effect).
	setup func(t *testing.T, h *libvirtHost) (arg string, seen func() (bool, string))
	// need says why this run cannot show what it is about, or "".
	need func(cmdline string) string
	// check asserts what the policy implies once the payload has run.
	check func(t *testing.T, h *libvirtHost, r *libvirtAttackRun)
}

// libvirtAttackRun is one run of one payload in one domain.
type libvirtAttackRun struct {
	kfv    bool
	d      *libvirtDomain
	pid    int // QEMU, as libvirt recorded it
	spid   int // the kfv supervisor following it; 0 on a bare run
	report implantReport
	seen   bool   // the payload's effect, seen from outside
	what   string // what was seen
	events string // kfv's event stream for the VM
}

// libvirtSandboxSpawn is what libvirt adds to QEMU's command line with
// qemu.conf's default seccomp_sandbox = 1: QEMU 7.2's own filter answers
// fork, vfork and execve with SECCOMP_RET_KILL_PROCESS; QEMU 10.0's fails
// execve with EPERM (SECCOMP_RET_ERRNO), measured by exec-shell below.
const libvirtSandboxSpawn = "spawn=deny"

var libvirtAttacks = []libvirtAttack{
	{
		// Under libvirt without a MAC driver (no AppArmor or SELinux
		// here) every QEMU runs as libvirt-qemu, and libvirt's dynamic
		// ownership makes every running domain's image belong to that
		// user: a subverted device model of one VM can write another
		// VM's disk. libvirt's -sandbox has no say on open and write.
		//
		// Under kfv: the open of a file that QEMU's command line does
		// not name falls to the profile's default verdict, deny (rule
		// "default", severity medium, one signature finding from
		// block-worker). The ladder reacts to three such denials from
		// one resource within 10 s (repeated-denials), to L1 findings of
		// high or more, to origin findings (the call comes from libc's
		// text, so there is none) and to memwatch: one open is none of
		// these, so the policy is deny and keep the VM running, and
		// libvirt must still see it "running (booted)".
		payload: "other-disk",
		setup: func(t *testing.T, h *libvirtHost) (string, func() (bool, string)) {
			other := filepath.Join(h.dir, fmt.Sprintf("other-vm-%d.img", time.Now().UnixNano()))
			if err := os.WriteFile(other, make([]byte, 64<<10), 0o600); err != nil {
				t.Fatalf("write the other VM's image: %v", err)
			}
			// As libvirt's dynamic ownership leaves a running domain's image.
			if err := os.Chown(other, h.uid, -1); err != nil {
				t.Fatalf("give the other VM's image to libvirt-qemu: %v", err)
			}
			return other, func() (bool, string) {
				b, err := os.ReadFile(other)
				if err != nil {
					t.Fatalf("read the other VM's image: %v", err)
				}
				head := b[:len(implantOtherDiskMark)]
				return string(head) == implantOtherDiskMark, fmt.Sprintf("%s starts with %q", filepath.Base(other), head)
			}
		},
		check: func(t *testing.T, h *libvirtHost, r *libvirtAttackRun) {
			if r.seen != !r.kfv {
				t.Errorf("effect seen=%t (%s), want %t", r.seen, r.what, !r.kfv)
			}
			if want := map[bool]string{false: "ok", true: "fail"}[r.kfv]; r.report.Result != want {
				t.Errorf("implant result=%s (%s), want %s", r.report.Result, r.report.Detail, want)
			}
			if s := domstate(t, r.d.name); s != "running (booted)" {
				t.Fatalf("domain state %q after the payload, want 'running (booted)'", s)
			}
			if !r.kfv {
				return
			}
			evs := readEvents(t, r.events)
			deny := payloadDenial(evs, r.report.TID, "openat", "open", "openat2")
			if deny == nil {
				t.Fatalf("no deny of the payload's open by its thread %d (%q):\n%s", r.report.TID, r.report.Thread, dumpEvents(evs))
			}
			t.Logf("denied: %s thread=%q layer=%s hrsc=%s rule=%s errno=%s applied=%s args=%s", deny.Syscall, deny.Thread, deny.Layer, deny.HRSC, deny.Rule, deny.Errno, deny.Applied, deny.Args)
			if deny.Thread != "worker" || deny.Rule != "default" || deny.Applied != "deny" {
				t.Errorf("deny of %s: thread %q rule %q applied %q; want worker, default, deny", deny.Syscall, deny.Thread, deny.Rule, deny.Applied)
			}
			if re := reactionEvents(evs); len(re) > 0 {
				t.Errorf("the ladder reacted to one medium denial:\n%s", dumpEvents(re))
			}
			// libvirt still manages the domain: its monitor commands
			// pass kfv's filter both ways.
			mustVirsh(t, "suspend", r.d.name)
			if s := domstate(t, r.d.name); s != "paused (user)" {
				t.Errorf("domain state %q after virsh suspend, want 'paused (user)'", s)
			}
			mustVirsh(t, "resume", r.d.name)
			if s := domstate(t, r.d.name); s != "running (unpaused)" {
				t.Errorf("domain state %q after virsh resume, want 'running (unpaused)'", s)
			}
			b, err := os.ReadFile(r.d.console)
			if err != nil {
				t.Fatalf("read console: %v", err)
			}
			if m, err := guest.ParseMarkers(b); err != nil || m.Status != "ok" {
				t.Errorf("the guest's trigger workload did not report success (%v, %+v): the disk write that carried the trigger failed", err, m)
			}
		},
	},
	{
		// exec-shell is stopped under libvirt before kfv is asked:
		// libvirt's -sandbox on,...,spawn=deny answers execve with
		// SECCOMP_RET_KILL_PROCESS, and of stacked filters the kernel
		// applies the most restrictive action, so kfv's USER_NOTIF for
		// execve never happens. The built-in profile alone would deny
		// it (rule no-exec, severity high, one finding on L2 from
		// block-worker: no rung of the ladder) and keep the VM running,
		// as TestAttack/exec-shell shows; stacked on libvirt's sandbox,
		// the policy is QEMU killed, in both runs, and libvirt sees a
		// crash ("shut off (crashed)") and cleans up. QEMU 10.0's
		// sandbox fails execve with EPERM instead (measured: the
		// implant's execve returns EPERM, bare and under kfv, and the
		// domain keeps running); SECCOMP_RET_ERRNO outranks USER_NOTIF
		// as KILL_PROCESS does, so kfv is not asked there either. Pinned
		// here so that a change on either side (libvirt's sandbox, QEMU's,
		// the stacking) shows.
		payload: "exec-shell",
		need: func(cmdline string) string {
			if !strings.Contains(cmdline, "-sandbox\x00on,") || !strings.Contains(cmdline, libvirtSandboxSpawn) {
				return "libvirt starts QEMU without -sandbox ...," + libvirtSandboxSpawn + " (seccomp_sandbox = 0 in qemu.conf): kfv alone then decides, as TestAttack/exec-shell shows"
			}
			return ""
		},
		setup: func(t *testing.T, h *libvirtHost) (string, func() (bool, string)) {
			// A directory libvirt-qemu may write to: the marker could
			// appear if the shell ran.
			dir := filepath.Join(h.dir, fmt.Sprintf("marker-%d", time.Now().UnixNano()))
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(dir, h.uid, -1); err != nil {
				t.Fatalf("give the marker directory to libvirt-qemu: %v", err)
			}
			marker := filepath.Join(dir, "marker")
			return marker, func() (bool, string) {
				_, err := os.Stat(marker)
				return err == nil, fmt.Sprintf("marker %s: stat err=%v", marker, err)
			}
		},
		check: func(t *testing.T, h *libvirtHost, r *libvirtAttackRun) {
			if r.seen {
				t.Errorf("the shell ran: %s", r.what)
			}
			var s string
			if qemuMajor >= 10 {
				if r.report.Result != "fail" || !strings.Contains(r.report.Detail, "execve") || !strings.Contains(r.report.Detail, "not permitted") {
					t.Errorf("implant result=%s (%s), want fail with EPERM from execve: QEMU %s's sandbox fails execve", r.report.Result, r.report.Detail, qemuVersion)
				}
				if s = domstate(t, r.d.name); !strings.HasPrefix(s, "running") {
					t.Fatalf("domain state %q, want running: QEMU %s's sandbox fails execve and QEMU goes on", s, qemuVersion)
				}
				mustVirsh(t, "destroy", r.d.name)
			} else {
				if r.report.Result != "exec" {
					t.Errorf("implant result=%s (%s), want exec (the last word before its execve)", r.report.Result, r.report.Detail)
				}
				if !waitFor(20*time.Second, func() bool { s = domstate(t, r.d.name); return s == "shut off (crashed)" }) {
					t.Fatalf("domain state %q, want 'shut off (crashed)': libvirt's sandbox kills QEMU at execve", s)
				}
			}
			libvirtGone(t, r.pid, r.spid)
			if !r.kfv {
				return
			}
			evs := readEvents(t, r.events)
			if d := payloadDenial(evs, r.report.TID, "execve", "execveat"); d != nil {
				t.Errorf("kfv was asked about the execve although QEMU's own filter, which outranks it, is stacked on its filter: %+v", *d)
			}
			if !hasLifecycle(evs, "no process uses the filter") {
				t.Errorf("the supervisor did not record its end:\n%s", dumpEvents(evs))
			}
		},
	},
}

// TestLibvirtAttack: the last acceptance point of libvirt support. A
// payload of the test implant runs in QEMU's block worker thread inside a
// libvirt domain, first with plain QEMU as the emulator (the payload
// works under libvirt), then with the kfv link: kfv stops it, its event
// stream for the VM has the deny by the worker thread, virsh domstate
// tells the state the policy implies, and virsh still manages the domain
// and ends it with nothing left behind.
func TestLibvirtAttack(t *testing.T) {
	h := newLibvirtHost(t)
	// libvirt-qemu must be able to read the implant: the guest cache
	// may be in a directory it cannot search.
	b, err := os.ReadFile(buildImplant(t))
	if err != nil {
		t.Fatalf("read the implant: %v", err)
	}
	implant := filepath.Join(h.dir, "implant.so")
	if err := os.WriteFile(implant, b, 0o644); err != nil {
		t.Fatalf("copy the implant: %v", err)
	}
	for _, c := range libvirtAttacks {
		t.Run(c.payload, func(t *testing.T) {
			for _, kfv := range []bool{false, true} {
				name := map[bool]string{false: "bare", true: "kfv"}[kfv]
				t.Run(name, func(t *testing.T) { runLibvirtAttack(t, h, c, implant, kfv) })
			}
		})
	}
}

func runLibvirtAttack(t *testing.T, h *libvirtHost, c libvirtAttack, implant string, kfv bool) {
	began := time.Now()
	arg, effect := c.setup(t, h)
	r := &libvirtAttackRun{kfv: kfv}
	name := fmt.Sprintf("kfv-attack-%d-%s-%s", os.Getpid(), c.payload, map[bool]string{false: "bare", true: "kfv"}[kfv])
	disk := filepath.Join(h.dir, name+".img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatalf("create disk: %v", err)
	}
	if err := os.Truncate(disk, 16<<20); err != nil {
		t.Fatalf("size disk: %v", err)
	}
	// The guest idles after the trigger until the test ends the domain.
	words, err := guest.TriggerCmdline(c.payload, arg, 600)
	if err != nil {
		t.Fatal(err)
	}
	r.d = &libvirtDomain{
		name:     name,
		emulator: h.qemu,
		cmdline:  guest.LinuxCmdline(guest.WorkloadTrigger, words...),
		// libvirt's default for a raw file: aio=threads, so the guest's
		// writes reach the implant in a worker thread.
		devices: fmt.Sprintf("    <disk type='file' device='disk'>\n"+
			"      <driver name='qemu' type='raw'/>\n"+
			"      <source file='%s'/>\n"+
			"      <target dev='vda' bus='virtio'/>\n"+
			"    </disk>\n", disk),
		env: fmt.Sprintf("    <qemu:env name='LD_PRELOAD' value='%s'/>\n", implant),
	}
	if kfv {
		r.d.emulator = h.link
	}
	h.define(t, r.d)
	logPath := "/var/log/libvirt/qemu/" + name + ".log"
	t.Cleanup(func() { os.Remove(logPath) })
	r.events = filepath.Join(h.events, name+".jsonl")

	r.pid = h.boot(t, r.d)
	if kfv {
		if r.spid = supervisorOf(r.pid); r.spid == 0 {
			t.Error("no kfv supervisor follows QEMU")
		}
	}
	if c.need != nil {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", r.pid))
		if err != nil {
			t.Fatalf("QEMU's command line: %v", err)
		}
		if why := c.need(string(cmdline)); why != "" {
			t.Skip(why)
		}
	}

	// The payload has run when the guest's write has completed, that is
	// when the guest prints its result; or QEMU is gone.
	done := "KFV-RESULT workload=" + guest.WorkloadTrigger
	if !waitFor(4*time.Minute, func() bool {
		b, _ := os.ReadFile(r.d.console)
		return bytes.Contains(b, []byte(done)) || !alive(r.pid)
	}) {
		b, _ := os.ReadFile(r.d.console)
		t.Fatalf("no %q on the console within 4 minutes\nconsole:\n%s", done, lastLines(string(b), 30))
	}
	// QEMU's stderr, where the implant reports, is libvirt's domain log.
	var log []byte
	waitFor(5*time.Second, func() bool {
		log, _ = os.ReadFile(logPath)
		r.report = parseImplant(string(log), c.payload)
		return r.report.Result != "" && r.report.Result != "exec" || !alive(r.pid)
	})
	if !r.report.loadedIn(r.pid) {
		t.Fatalf("the implant did not load into QEMU (pid %d), so this run proves nothing; implant lines %q\ndomain log:\n%s", r.pid, r.report.Lines, log)
	}
	if r.report.Result == "" {
		t.Fatalf("the implant reported no result for %s: the trigger did not reach it\ndomain log:\n%s", c.payload, log)
	}
	r.seen, r.what = effect()
	t.Logf("payload ran in thread %d %q: result=%s detail=%s", r.report.TID, r.report.Thread, r.report.Result, r.report.Detail)
	t.Logf("effect: seen=%t: %s", r.seen, r.what)
	if r.report.Thread != "worker" {
		t.Errorf("the payload ran in thread %q, want QEMU's block worker", r.report.Thread)
	}

	c.check(t, h, r)

	// libvirt ends the domain, whatever happened, and nothing is left.
	if alive(r.pid) {
		mustVirsh(t, "destroy", name)
		if s := domstate(t, name); s != "shut off (destroyed)" {
			t.Errorf("domain state %q after virsh destroy, want 'shut off (destroyed)'", s)
		}
	}
	libvirtGone(t, r.pid, r.spid)
	t.Logf("%s took %v", t.Name(), time.Since(began).Round(100*time.Millisecond))
}

// domstate is virsh domstate --reason, trimmed.
func domstate(t *testing.T, name string) string {
	t.Helper()
	return strings.TrimSpace(mustVirsh(t, "domstate", name, "--reason"))
}

// payloadDenial returns the first deny of one of syscalls by thread tid.
func payloadDenial(evs []event.Event, tid int, syscalls ...string) *event.Event {
	for i, e := range evs {
		if e.Kind == event.KindDecision && e.Verdict == "deny" && e.TID == tid && contains(syscalls, e.Syscall) {
			return &evs[i]
		}
	}
	return nil
}

// reactionEvents returns the reaction events.
func reactionEvents(evs []event.Event) []event.Event {
	var out []event.Event
	for _, e := range evs {
		if e.Kind == event.KindReaction {
			out = append(out, e)
		}
	}
	return out
}
