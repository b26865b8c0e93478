//go:build linux

package seccompnotify

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"kfv/orch"
	"kfv/profiles"
	"kfv/sysent"
)

// Call is one notification on its way to an answer: what the kernel
// reported, the request decoded from it, and what decoding could not
// read. A Call handed to Gate.Answer belongs to the gate: a call answered
// beside the loop keeps it until then, so the loop must give each
// notification a Call of its own (or a copy).
type Call struct {
	N         Notif
	Req       orch.Request
	DecodeErr error
	// OwnArgs is set by Decoder.DecodeCall when the request holds only
	// the call's registers and the caller's name read through an fd kept
	// from before the notification: nothing that a thread taking the id
	// of a caller gone since could have changed. A plain verdict on such
	// a request (CONTINUE or an errno, nothing acted on first) needs no
	// NOTIF_ID_VALID check: the kernel's SEND fails with ENOENT for a
	// notification whose caller is gone, and ids are never reused.
	OwnArgs bool

	detail string // what the gate learnt on the way (the path requested)
}

// Outcome is what the gate did with one call, for the event stream.
type Outcome struct {
	Req      *orch.Request
	Decision orch.Decision
	// Applied is what kfv answered: "allow" (continued or performed) or
	// "deny".
	Applied string
	// Errno is the errno of a denial, or of a performed call's failure.
	Errno  string
	Detail string
}

// Gate answers decided calls. It is the one place that applies the mode
// (audit answers allow, enforce answers the decision) and the one place
// that answers the kernel for a decided call: a call sysent marks
// performed is carried out by its performer, whose result the gate
// installs (an fd, a return value, an errno); any other allowed call
// continues in the kernel.
//
// Answer may be called from the notification loop, from the goroutine
// that resolves held calls and from the gate's own workers. Each must run
// on a thread with file-system attributes of its own
// (PrepareEmulationThread): performing a creation sets the thread's umask
// to the caller's.
type Gate struct {
	Listener *Listener
	Pidfd    *os.File // QEMU's: its fds are copied through it
	// PID is the process of Pidfd. A call from another process under
	// the filter (QEMU's -daemonize forks) has its fds copied through a
	// pidfd of its own.
	PID   int
	Audit bool
	// Decide decides a request again when a performed call reaches
	// another object than the path it names (a symlink, "..").
	Decide func(*orch.Request) orch.Decision
	// Report receives the outcome of every call answered (and of those
	// whose caller went away before the answer).
	Report func(*Outcome)
	// Observe receives the findings of each final decision taken here
	// (not those of a held call the VO resolved: it has seen them).
	Observe func([]orch.Finding)
	// Workers run calls that may block beside the loop; nil runs them
	// inline.
	Workers *Workers
	// DroppedRoot: kfv itself took root from QEMU (kfv-run --run-as):
	// QEMU would have held root's rights on the objects its command
	// line names, so kfv performs with its own the calls that need them
	// on those objects (TUNSETIFF on a tap the VM names). Otherwise a
	// call kfv performs does no more than QEMU could itself.
	DroppedRoot bool
	// Answered, if set, learns of every call answered (continued: it
	// continued in the kernel) or whose caller went away, after the
	// answer and before its outcome is reported; what it returns joins
	// the outcome's detail. It ends a hold of QEMU's other threads
	// (Decoder.HoldOthers) taken for the call.
	Answered func(id uint64, continued bool) string

	others callerPidfds
}

// result is what a performer did, for the gate to answer.
type result struct {
	kind  resultKind
	val   int64      // resValue
	errno unix.Errno // resValue: the call's own errno (0: it succeeded)
	fd    FD         // resFD: owned by the gate from then on
	flags uint32     // resFD: the new fd's flags (O_CLOEXEC)
	// obj, when set, is the device and inode fd must be open on (resFD):
	// the object decided on, checked again just before it is installed.
	obj    *[2]uint64
	rule   string // resDenied
	reason string // resDenied
	force  bool   // resDenied: in every mode (kfv's own integrity checks)
	detail string
}

type resultKind uint8

const (
	// resDecided answers as decided: the mode applied, an allow
	// continues.
	resDecided resultKind = iota
	// resValue returns val, or fails with errno: the performed call's
	// own result.
	resValue
	// resFD installs fd in the caller as the call's result.
	resFD
	// resDenied refuses the call by kfv's own check.
	resDenied
	// resLater: the call is being performed beside the loop, which
	// answers it when done.
	resLater
	// resGone: the caller went away; nobody to answer.
	resGone
)

func decided(detail string) result { return result{kind: resDecided, detail: detail} }
func returns(val int64, e unix.Errno, detail string) result {
	return result{kind: resValue, val: val, errno: e, detail: detail}
}
func failed(e unix.Errno, detail string) result { return returns(0, e, detail) }
func installs(fd FD, flags uint32, detail string) result {
	return result{kind: resFD, fd: fd, flags: flags, detail: detail}
}

// notOn says why fd is not open on the object obj (device, inode), ""
// when it is.
func notOn(fd FD, obj [2]uint64) string {
	var st unix.Stat_t
	if err := unix.Fstat(int(fd), &st); err != nil {
		return "fstat the fd to install: " + err.Error()
	}
	if st.Dev != obj[0] || st.Ino != obj[1] {
		return fmt.Sprintf("the fd to install is on %d:%d, not on the object decided on (%d:%d): kfv's own fd was closed and its number reused", st.Dev, st.Ino, obj[0], obj[1])
	}
	return ""
}

func refused(rule, reason string, force bool) result {
	return result{kind: resDenied, rule: rule, reason: reason, force: force}
}

// errnoOr is the errno an error carries, else def: what the native call
// would have returned.
func errnoOr(err error, def unix.Errno) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return def
}

// performer carries out one kind of performed call (sysent.Performer).
type performer struct {
	// resolve, if set, finds the object a path names the way the kernel
	// would for the caller, before the decision is applied: the gate
	// then decides on that object (its canonical path), not on the
	// string the caller passed. An error of type Errno is what the
	// native call would have returned.
	resolve func(g *Gate, c *Call) (*Target, error)
	// perform carries out an allowed call in enforce mode. It owns t
	// (nil without resolve) and must close it, or hand it to later.
	perform func(g *Gate, c *Call, d orch.Decision, t *Target, terr error) result
}

var performers [sysent.NumPerformers]performer

// register installs the performer of kind k; each performer's file
// registers its own from init.
func register(k sysent.Performer, p performer) { performers[k] = p }

// Answer carries out decision d for c and answers the kernel. fresh: d
// comes straight from the decider, and a performed call may be decided
// again on the object it reaches; a held call the VO resolved is final.
func (g *Gate) Answer(c *Call, d orch.Decision, fresh bool) {
	c.detail = ""
	e, ok := sysent.Lookup(c.Req.Syscall)
	if !ok || !e.Performed() {
		g.observe(d, fresh)
		g.finish(c, d, decided(decodeText(c.DecodeErr)))
		return
	}
	if c.DecodeErr != nil {
		// What the call names could not be read: it was decided on what
		// is known (rules saw no path or address, so rules about them
		// did not match). An allow must still not continue: the memory
		// kfv could not read may be readable, and say something else,
		// when the kernel reads it. The call fails as the kernel fails
		// an argument it cannot read.
		g.observe(d, fresh)
		if d.Action == profiles.VerdictAllow && !g.Audit {
			errno := errnoOr(c.DecodeErr, unix.EFAULT) // EINVAL for a bad address length
			if errors.Is(c.DecodeErr, ErrTooLong) {
				errno = unix.ENAMETOOLONG
			}
			g.finish(c, d, failed(errno, decodeText(c.DecodeErr)+"; kfv performs this call and could not read its argument"))
			return
		}
		g.finish(c, d, decided(decodeText(c.DecodeErr)))
		return
	}
	p := performers[e.Perform]
	var t *Target
	var terr error
	if p.resolve != nil {
		if c.Req.PathArg == "" && c.Req.Path == "" {
			g.observe(d, fresh)
			g.finish(c, d, decided(""))
			return
		}
		t, terr = p.resolve(g, c)
		if terr == nil {
			if fresh && t.Path != c.Req.Path {
				c.Req.Path = t.Path
				d = g.Decide(&c.Req) // on the object reached, not the string
			}
			if c.Req.PathArg != t.Path {
				c.detail = "requested " + strconv.Quote(c.Req.PathArg)
			}
			if s := t.second; s != nil {
				d = g.decideSecond(c, d, s)
			}
		}
	}
	g.observe(d, fresh)
	if d.Action != profiles.VerdictAllow || g.Audit {
		t.Close()
		g.finish(c, d, decided(""))
		return
	}
	g.finish(c, d, p.perform(g, c, d, t, terr))
}

// decideSecond decides a call with two paths (rename, link) on its
// second, the object that path reached, and returns the decision that
// holds for the call: both must be allowed. A decision the VO resolved
// is final for the first path only: the second is decided here either
// way.
func (g *Gate) decideSecond(c *Call, d orch.Decision, s *Target) orch.Decision {
	c.Req.Path2 = s.Path
	if c.Req.Path2Arg != s.Path {
		c.detail = join(c.detail, "second path requested "+strconv.Quote(c.Req.Path2Arg))
	}
	c.detail = join(c.detail, "second path "+strconv.Quote(s.Path))
	if g.Decide == nil {
		// Nothing can judge the second path: refuse rather than act
		// on a path no one checked.
		d.Action, d.Errno, d.Rule, d.Reason = profiles.VerdictDeny, int(unix.EACCES), "kfv:second-path", "no decider for the second path"
		return d
	}
	r := c.Req
	r.Path, r.PathArg = s.Path, c.Req.Path2Arg
	d2 := g.Decide(&r)
	if d.Action == profiles.VerdictAllow && d2.Action != profiles.VerdictAllow {
		d2.Findings = slices.Concat(d.Findings, d2.Findings)
		d2.Reason = join("second path "+strconv.Quote(s.Path), d2.Reason)
		return d2
	}
	d.Findings = slices.Concat(d.Findings, d2.Findings)
	return d
}

// observe passes a fresh decision's findings on to the VO.
func (g *Gate) observe(d orch.Decision, fresh bool) {
	if fresh && g.Observe != nil && len(d.Findings) > 0 {
		g.Observe(d.Findings)
	}
}

// later runs work beside the loop on one of the gate's workers and
// answers c with its result; work owns what release releases. It returns
// at once; when every worker is busy, release runs instead and the call
// fails with EAGAIN, as a call the kernel could not start now would.
func (g *Gate) later(c *Call, d orch.Decision, release func(), work func(c *Call) result) result {
	if g.Workers == nil {
		return work(c)
	}
	cc := *c // the loop reuses its own
	job := task{
		run: func() { g.finish(&cc, d, work(&cc)) },
		fail: func(err error) {
			release()
			g.finish(&cc, d, refused("kfv:emulation", err.Error(), true))
		},
	}
	if !g.Workers.try(job) {
		release()
		return failed(unix.EAGAIN, fmt.Sprintf("kfv: %d calls that may block are already being performed", maxWorkers))
	}
	return result{kind: resLater}
}

// maybeLater runs work at once, or beside the loop when it may block.
func (g *Gate) maybeLater(c *Call, d orch.Decision, mayBlock bool, release func(), work func(c *Call) result) result {
	if !mayBlock {
		return work(c)
	}
	return g.later(c, d, release, work)
}

// finish answers c as r says and reports the outcome.
func (g *Gate) finish(c *Call, d orch.Decision, r result) {
	n := &c.N
	var err error
	out := Outcome{Req: &c.Req, Decision: d, Applied: "allow", Detail: join(c.detail, r.detail)}
	continued := false
	switch r.kind {
	case resLater:
		return
	case resGone:
		if g.Answered != nil {
			g.Answered(n.ID, false)
		}
		return
	case resDenied:
		d.Action, d.Errno, d.Rule, d.Reason = profiles.VerdictDeny, int(unix.EPERM), r.rule, r.reason
		out.Decision = d
		fallthrough
	case resDecided:
		out.Errno = ""
		if d.Action != profiles.VerdictAllow {
			e := unix.Errno(d.Errno)
			if e <= 0 {
				e = unix.EPERM
			}
			out.Errno = unix.ErrnoName(e)
			if !g.Audit || r.force {
				out.Applied = "deny"
				err = g.Listener.Fail(n.ID, e)
				break
			}
		}
		// An allow decided here continues: only calls whose object is
		// not in QEMU's memory, or that sysent marks performed and
		// that did not get this far, reach this point (and memory-slot
		// calls, whose caller's memory nobody else can write while
		// they are held: Decoder.HoldOthers).
		err = g.Listener.Continue(n.ID)
		continued = err == nil
	case resValue:
		if r.errno != 0 {
			out.Errno = unix.ErrnoName(r.errno)
			err = g.Listener.Fail(n.ID, r.errno)
		} else {
			err = g.Listener.Return(n.ID, r.val)
		}
	case resFD:
		if r.obj != nil {
			// What kfv installs must be what it decided on. Only a kfv
			// fault (one of its fds closed twice, the number taken
			// since) fails this: say so rather than hand QEMU another
			// file.
			if why := notOn(r.fd, *r.obj); why != "" {
				r.fd.Close()
				g.finish(c, d, refused("kfv:emulation", why, true))
				return
			}
		}
		var fd int
		fd, err = g.Listener.AddFD(n.ID, r.fd, r.flags, true)
		r.fd.Close()
		if err != nil && !errors.Is(err, ErrGone) {
			// The fd could not be installed: the call is unanswered.
			g.finish(c, d, refused("kfv:emulation", "install fd: "+err.Error(), true))
			return
		}
		if err == nil {
			out.Detail = join(out.Detail, "emulated: fd "+strconv.Itoa(fd))
		}
	}
	if g.Answered != nil {
		out.Detail = join(out.Detail, g.Answered(n.ID, continued))
	}
	if err != nil {
		if errors.Is(err, ErrGone) {
			out.Detail = join(out.Detail, "caller gone before the answer")
		} else {
			out.Detail = join(out.Detail, "answer failed: "+err.Error())
		}
	}
	if d.Reason != "" {
		out.Detail = join(d.Reason, out.Detail)
	}
	if g.Report != nil {
		g.Report(&out)
	}
}

func decodeText(err error) string {
	if err == nil {
		return ""
	}
	return "decode: " + err.Error()
}

func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// Refuse denies c in every mode: kfv's own integrity checks (a foreign
// ABI, a loader that execs something else than QEMU).
func (g *Gate) Refuse(c *Call, d orch.Decision) {
	c.detail = ""
	g.finish(c, d, refused(d.Rule, d.Reason, true))
}

// Continue lets one of kfv's own calls proceed: the loader's exec of
// QEMU (made before any QEMU code exists) or a call a memwatch scrub
// injects into a frozen QEMU thread (register arguments only). Nothing
// is reported: the caller says what the call was.
func (g *Gate) Continue(c *Call) error { return g.Listener.Continue(c.N.ID) }
