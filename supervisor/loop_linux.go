//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/orch"
	"kfv/seccompnotify"
)

// loop owns the listener: receive, decode, check the id, decide, answer,
// log. Every notification is answered; when deciding fails, the answer is
// a denial.
func (s *session) loop() error {
	// Emulated creations must get QEMU's umask, which it inherited from
	// kfv-run at fork: this thread keeps it in file-system attributes of
	// its own, whatever the rest of the supervisor does.
	old := unix.Umask(0)
	unix.Umask(old)
	if err := seccompnotify.PrepareEmulationThread(old); err != nil {
		return fmt.Errorf("prepare the emulation thread: %w", err)
	}
	var n seccompnotify.Notif
	var req orch.Request
	for {
		if err := s.listener.Receive(&n); err != nil {
			if errors.Is(err, seccompnotify.ErrClosed) {
				return nil
			}
			return err
		}
		s.handle(&n, &req)
	}
}

func (s *session) handle(n *seccompnotify.Notif, req *orch.Request) {
	decodeErr := s.dec.Decode(n, req)
	// Everything read above (memory, /proc) is only trustworthy if the
	// thread is still the one that made this call.
	if err := s.listener.IDValid(n.ID); err != nil {
		return // the caller is gone; nobody to answer
	}
	if n.Arch != unix.AUDIT_ARCH_X86_64 {
		// The filter kills foreign ABIs; this cannot happen unless the
		// filter is wrong. Deny and say so.
		s.answer(n, req, orch.Decision{Action: orch.Deny, Errno: int(unix.EPERM), Rule: "kfv:arch", Reason: fmt.Sprintf("unexpected audit arch %#x", n.Arch)}, "", true)
		return
	}
	if !s.execDone && req.Syscall == "execve" && n.PID == s.pid {
		s.gateExec(n, req)
		return
	}
	if s.injected.is(n) {
		// memwatch's scrub, giving code back its protection from a frozen
		// QEMU thread: kfv's own call, register arguments only.
		err := s.listener.Continue(n.ID)
		detail := "memwatch scrub: injected by kfv"
		if err != nil {
			detail += ": " + err.Error()
		}
		s.emitDecision(req, orch.Decision{Action: orch.Allow, Rule: "kfv:scrub"}, "allow", "", detail)
		return
	}
	d := s.cfg.Decider.Decide(req)
	if d.Hold && s.cfg.Mode == Enforce && s.plane != nil {
		// The HO asks to keep the thread blocked until the VO decides:
		// the plane answers it, within the hold's bound. Copies: the
		// loop reuses its notification and request.
		if s.plane.hold(&heldCall{n: *n, req: *req, d: d}) {
			return
		}
		d.Hold = false // the queue is full: the fallback verdict now
	}
	if s.emulate(n, req, decodeErr, d, true) {
		return
	}
	s.answer(n, req, d, errText(decodeErr), false)
}

// gateExec lets the loader's execve of QEMU through. It comes from kfv's
// own loader, before any QEMU code exists, so letting it continue is safe;
// it is checked against the path kfv asked for all the same.
func (s *session) gateExec(n *seccompnotify.Notif, req *orch.Request) {
	s.execDone = true
	want := s.execPath()
	if req.Path != want {
		s.answer(n, req, orch.Decision{Action: orch.Deny, Errno: int(unix.EPERM), Rule: "kfv:launch", Reason: fmt.Sprintf("loader exec of %q, expected %q", req.Path, want)}, "", true)
		return
	}
	err := s.listener.Continue(n.ID)
	detail := "exec " + req.Path
	if err != nil {
		detail += ": " + err.Error()
	}
	s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", TID: n.PID, Syscall: "execve", Verdict: "allow", Applied: "allow", Rule: "kfv:launch", Detail: detail})
}

// answer applies a decision: in enforce mode as decided, in audit mode
// always allow. force applies the decision even in audit mode (kfv's own
// integrity checks).
func (s *session) answer(n *seccompnotify.Notif, req *orch.Request, d orch.Decision, detail string, force bool) {
	applied := d.Action
	if s.cfg.Mode == Audit && !force {
		applied = orch.Allow
	}
	var err error
	errno := ""
	switch {
	case applied != orch.Allow:
		// Deny, and anything a broken decider returned.
		e := unix.Errno(d.Errno)
		if e <= 0 {
			e = unix.EPERM
		}
		errno = unix.ErrnoName(e)
		err = s.listener.Fail(n.ID, e)
	default:
		// TOCTOU: an allow decided from a pointer argument (a path) is
		// answered with CONTINUE, so another QEMU thread can swap the
		// path between our read and the kernel's. Emulated opens and
		// connects replace this for pointer-based rules.
		err = s.listener.Continue(n.ID)
	}
	if d.Action != orch.Allow && errno == "" {
		e := unix.Errno(d.Errno)
		if e <= 0 {
			e = unix.EPERM
		}
		errno = unix.ErrnoName(e)
	}
	if err != nil {
		if errors.Is(err, seccompnotify.ErrGone) {
			detail = join(detail, "caller gone before the answer")
		} else {
			detail = join(detail, "answer failed: "+err.Error())
		}
	}
	s.emitDecision(req, d, applied.String(), errno, detail)
}

// emitDecision writes the event of one decision: applied is what kfv
// answered, errno the errno of a denial or of an emulated call's failure.
func (s *session) emitDecision(req *orch.Request, d orch.Decision, applied, errno, detail string) {
	if d.Reason != "" {
		detail = join(d.Reason, detail)
	}
	if s.plane != nil {
		s.plane.observe(d.Findings)
	}
	s.emit(&event.Event{
		Kind:    event.KindDecision,
		Source:  "seccomp",
		PID:     req.PID,
		TID:     req.TID,
		Thread:  req.Thread,
		Layer:   string(d.Layer),
		HRSC:    d.HRSC,
		Syscall: req.Syscall,
		Args:    summarize(req),
		Verdict: d.Action.String(),
		Errno:   errno,
		Applied: applied,
		Rule:    d.Rule,
		Detail:  detail,
	})
}

func (s *session) execPath() string { return s.qemuPath }

func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// summarize renders a request's arguments for people: the decoded path,
// socket address and fd targets, then the raw arguments.
func summarize(r *orch.Request) string {
	var b strings.Builder
	if r.Path != "" {
		fmt.Fprintf(&b, "path=%q ", r.Path)
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
	fmt.Fprintf(&b, "args=[%#x %#x %#x %#x %#x %#x]", r.Args[0], r.Args[1], r.Args[2], r.Args[3], r.Args[4], r.Args[5])
	return b.String()
}
