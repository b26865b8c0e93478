//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/orch"
	"kfv/profiles"
	"kfv/seccompnotify"
	"kfv/sysent"
)

// The notification loop owns the listener: receive, decode, check the id,
// decide, and hand the decision to the gate (seccompnotify.Gate), which
// applies the mode, performs what sysent marks performed, answers the
// kernel and reports the outcome here, as one decision event. Every
// notification is answered; the loop never waits for the plane (a held
// call goes to it through a bounded queue) nor for a call that may block
// (the gate's workers run those).

// loop runs until no task uses the filter any more.
func (s *session) loop() error {
	// Performed creations must get QEMU's umask, which it inherited from
	// kfv-run at fork: this thread keeps it in file-system attributes of
	// its own, whatever the rest of the supervisor does.
	if err := seccompnotify.PrepareEmulationThread(currentUmask()); err != nil {
		return fmt.Errorf("prepare the notification thread: %w", err)
	}
	keepSpareP()
	var c seccompnotify.Call
	for {
		if err := s.listener.Receive(&c.N); err != nil {
			if errors.Is(err, seccompnotify.ErrClosed) {
				return nil
			}
			return err
		}
		s.handle(&c)
	}
}

// keepSpareP gives the runtime a second P when it has only one (kfv-run
// pinned to one CPU, as it is beside the VM it supervises), unless
// GOMAXPROCS is set in the environment. The loop blocks in a syscall
// between notifications; with a single P, Go's sysmon finds no idle P
// and retakes the loop's from the syscall (and wakes a thread to take
// it over), which on one CPU the target's call waits for. With an idle
// spare P it leaves the loop's alone, and backs off. Measured on one CPU
// (the bench's getppid round trip): 10.97 µs against 10.15 µs per call.
// The CPUs kfv may use stay the same: it is the runtime's bookkeeping,
// not more threads running at once on that CPU.
func keepSpareP() {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
}

func (s *session) handle(c *seccompnotify.Call) {
	s.dec.DecodeCall(c)
	// Everything read above (memory, /proc) is only trustworthy if the
	// thread is still the one that made this call. A request of the
	// call's own registers (Call.OwnArgs) is checked only before
	// something is done with it besides a plain verdict: the answer
	// itself fails with ENOENT when the caller is gone (one ioctl less
	// per call on the allow and deny paths of such calls).
	checked := !c.OwnArgs
	if checked {
		if err := s.listener.IDValid(c.N.ID); err != nil {
			return // the caller is gone; nobody to answer
		}
	}
	s.maybeFollow(c)
	switch {
	case c.N.Arch != unix.AUDIT_ARCH_X86_64:
		// The filter kills foreign ABIs; this cannot happen unless the
		// filter is wrong. Deny and say so.
		s.gate.Refuse(c, orch.Decision{Action: profiles.VerdictDeny, Rule: "kfv:arch", Reason: fmt.Sprintf("unexpected audit arch %#x", c.N.Arch)})
		return
	case !s.execDone && (c.Req.Syscall == "execve" || c.Req.Syscall == "execveat") && c.N.PID == s.proc.pid:
		if !checked && s.listener.IDValid(c.N.ID) != nil {
			return
		}
		s.gateExec(c)
		return
	case s.injected.is(&c.N):
		// memwatch's scrub, giving code back its protection from a frozen
		// QEMU thread: kfv's own call, register arguments only.
		detail := "memwatch scrub: injected by kfv"
		if err := s.gate.Continue(c); err != nil {
			detail += ": " + err.Error()
		}
		s.report(&seccompnotify.Outcome{Req: &c.Req, Decision: orch.Decision{Action: profiles.VerdictAllow, Rule: "kfv:scrub"}, Applied: "allow", Detail: detail})
		return
	}
	d := s.cfg.Policy.Decider.Decide(&c.Req)
	s.countFork(&c.Req, d)
	if s.plane.netCut.Load() && d.Action == profiles.VerdictAllow {
		// Link down: kfv's network switch refuses what the policy
		// would allow (outside_linux.go).
		if what := s.netCall(&c.Req); what != "" {
			d.Action, d.Errno, d.Hold = profiles.VerdictDeny, int(unix.ENETDOWN), false
			d.Rule, d.Reason = netSwitchRule, "the VM's network is down (link_down): kfv refuses "+what
		}
	}
	if !checked && (d.Hold || len(d.Findings) > 0) {
		// Held, or findings for the VO: acted on before the answer.
		if err := s.listener.IDValid(c.N.ID); err != nil {
			return
		}
	}
	if d.Hold && s.cfg.Mode == Enforce && s.plane.hold(c, d) {
		// The HO asks to keep the thread blocked until the VO decides:
		// the plane answers it through the gate, within the hold's bound.
		return
	}
	d.Hold = false // not held (audit mode, or the queue is full): the fallback verdict now
	s.gate.Answer(c, d, true)
}

// gateExec lets the loader's execve of QEMU through. It comes from kfv's
// own loader, before any QEMU code exists, so letting it continue is safe;
// it is checked against the path kfv asked for all the same.
func (s *session) gateExec(c *seccompnotify.Call) {
	s.execDone = true
	if c.Req.Syscall == "execveat" {
		// A loader that dropped QEMU's credentials execs the binary it
		// opened before (privdrop_linux.go): that fd must be QEMU's.
		if err := s.execFD(c); err != nil {
			s.gate.Refuse(c, orch.Decision{Action: profiles.VerdictDeny, Rule: "kfv:launch", Reason: "loader execveat: " + err.Error()})
			return
		}
		c.Req.Path = s.qemuPath
	}
	if c.Req.Path != s.qemuPath {
		s.gate.Refuse(c, orch.Decision{Action: profiles.VerdictDeny, Rule: "kfv:launch", Reason: fmt.Sprintf("loader exec of %q, expected %q", c.Req.Path, s.qemuPath)})
		return
	}
	detail := "exec " + c.Req.Path
	if err := s.gate.Continue(c); err != nil {
		detail += ": " + err.Error()
	}
	s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", TID: c.N.PID, Syscall: "execve", Verdict: "allow", Applied: "allow", Rule: "kfv:launch", Detail: detail})
}

// report writes the event of one answered call (seccompnotify.Gate.Report).
func (s *session) report(o *seccompnotify.Outcome) {
	d := &o.Decision
	if m := s.cfg.Metrics; m != nil {
		performed := ""
		if e, ok := sysent.Lookup(o.Req.Syscall); ok && e.Performed() && o.Applied == "allow" {
			performed = "ok"
			if o.Errno != "" {
				performed = o.Errno
			}
		}
		var took time.Duration
		if !o.Req.Time.IsZero() {
			took = time.Since(o.Req.Time)
		}
		m.Decision(o.Req.Syscall, d.Action.String(), o.Applied, performed, took)
	}
	s.emit(&event.Event{
		Kind:    event.KindDecision,
		Source:  "seccomp",
		PID:     o.Req.PID,
		TID:     o.Req.TID,
		Thread:  o.Req.Thread,
		Layer:   string(d.Layer),
		HRSC:    d.HRSC,
		Syscall: o.Req.Syscall,
		Args:    summarize(o.Req),
		Verdict: d.Action.String(),
		Errno:   o.Errno,
		Applied: o.Applied,
		Rule:    d.Rule,
		Detail:  o.Detail,
	})
}

// currentUmask reads the process's umask (setting it back at once).
func currentUmask() int {
	old := unix.Umask(0)
	unix.Umask(old)
	return old
}

// summarize renders a request's arguments for people: the decoded path,
// socket address and fd targets, then the raw arguments.
func summarize(r *orch.Request) string {
	var b strings.Builder
	if r.Path != "" {
		fmt.Fprintf(&b, "path=%q ", r.Path)
	}
	if r.Path2 != "" {
		fmt.Fprintf(&b, "path2=%q ", r.Path2)
	}
	if r.Sock != nil {
		fmt.Fprintf(&b, "family=%d addr=%q ", r.Sock.Family, r.Sock.String())
	}
	for i := 0; i < 6; i++ {
		if t, ok := r.Fds[i]; ok {
			fmt.Fprintf(&b, "fd%d=%q ", i, t)
		}
	}
	if r.Backing != "" {
		fmt.Fprintf(&b, "backing=%q ", r.Backing)
	}
	if m := r.Mem; m != nil {
		fmt.Fprintf(&b, "slot=%d gpa=%#x size=%#x hva=%#x ", m.Slot, m.GPA, m.Size, m.HVA)
	}
	if r.Ifreq != nil {
		fmt.Fprintf(&b, "ifname=%q ", r.Ifname)
	}
	// The raw arguments are on every decision event: appended, not
	// formatted (fmt cost about a microsecond a call here).
	var a [8 + 6*19 + 1]byte
	buf := append(a[:0], "args=["...)
	for i, v := range r.Args {
		if i > 0 {
			buf = append(buf, ' ')
		}
		buf = strconv.AppendUint(append(buf, "0x"...), v, 16) // as %#x
	}
	buf = append(buf, ']')
	if b.Len() == 0 {
		return string(buf)
	}
	b.Write(buf)
	return b.String()
}

// injected are the syscalls a scrub makes a frozen QEMU thread issue: the
// loop answers them CONTINUE as kfv's own (their arguments are registers,
// and the thread runs nothing else while it is frozen).
type injected struct {
	mu    sync.Mutex
	calls map[int]injectedCall // by thread id
}

type injectedCall struct {
	nr   int
	args [3]uint64
}

func (in *injected) expect(tid, nr int, args [3]uint64) func() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.calls == nil {
		in.calls = map[int]injectedCall{}
	}
	in.calls[tid] = injectedCall{nr, args}
	return func() {
		in.mu.Lock()
		defer in.mu.Unlock()
		delete(in.calls, tid)
	}
}

// is reports whether n is a call kfv itself injected.
func (in *injected) is(n *seccompnotify.Notif) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	c, ok := in.calls[n.PID]
	return ok && c.nr == n.Nr && c.args == [3]uint64{n.Args[0], n.Args[1], n.Args[2]}
}
