//go:build linux

package seccompnotify

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The takeover tests run a real filter in a child: this test binary again,
// under journalChildEnv. The child's whole process is filtered (TSYNC);
// the filter sends getpriority to the listener and allows everything else,
// and the Go runtime never calls getpriority. The child obeys lines on its
// stdin (journalChildMain) and answers on its stdout.
const journalChildEnv = "KFV_TEST_JOURNAL_CHILD"

// journalStop is the value that ends a child's "loop".
const journalStop = 0x7eef

func TestMain(m *testing.M) {
	switch os.Getenv(journalChildEnv) {
	case "":
		os.Exit(m.Run())
	case "filter":
		journalChildMain(true)
	case "inherit":
		journalChildMain(false)
	case "supervisor":
		journalSupervisorMain()
	}
	os.Exit(125)
}

// journalFilter is the child's BPF program: getpriority notified, the rest
// allowed (a foreign arch too: nothing here depends on it).
func journalFilter() []unix.SockFilter {
	return []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_GETPRIORITY},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_USER_NOTIF},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
}

// journalChildMain is the child. With load, it loads the filter into every
// thread of the process (the listener's number is printed) ; without, it
// runs under the filter it inherited from its parent child ("spawn").
func journalChildMain(load bool) {
	var outMu sync.Mutex
	say := func(format string, a ...any) {
		outMu.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", a...)
		outMu.Unlock()
	}
	listener := -1
	if load {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			say("error prctl: %v", err)
			return
		}
		fd, e := seccompSetFilter(unix.SECCOMP_FILTER_FLAG_NEW_LISTENER|unix.SECCOMP_FILTER_FLAG_TSYNC|
			unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH|unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, journalFilter())
		if e != 0 {
			say("error seccomp: %v", e)
			return
		}
		listener = fd
	}
	say("ready %d %d", os.Getpid(), listener)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "close":
			// The supervisor has its copy: the child's own must not
			// keep the listener open.
			unix.Close(listener)
			say("closed")
		case "call":
			tag, _ := strconv.ParseUint(f[1], 10, 32)
			go func() {
				r, _, e := unix.Syscall(unix.SYS_GETPRIORITY, unix.PRIO_PROCESS, uintptr(tag), 0)
				say("ret %d %d %d", tag, int64(r), int(e))
			}()
		case "loop":
			go func() {
				n := 0
				for {
					r, _, _ := unix.Syscall(unix.SYS_GETPRIORITY, unix.PRIO_PROCESS, 0, 0)
					if r == journalStop {
						break
					}
					n++
				}
				say("looped %d", n)
			}()
		case "stress":
			// k threads calling without pause; every answer must be 0
			// until journalStop.
			k, _ := strconv.Atoi(f[1])
			var mu sync.Mutex
			calls, bad, lastErr := 0, 0, 0
			var wg sync.WaitGroup
			for range k {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						r, _, e := unix.Syscall(unix.SYS_GETPRIORITY, unix.PRIO_PROCESS, 0, 0)
						mu.Lock()
						calls++
						if e != 0 || (r != 0 && r != journalStop) {
							bad++
							lastErr = int(e)
						}
						mu.Unlock()
						if r == journalStop || e != 0 {
							return
						}
					}
				}()
			}
			go func() {
				wg.Wait()
				say("stressed %d bad %d errno %d", calls, bad, lastErr)
			}()
		case "spawn":
			// A second process under the same filter and listener; it
			// talks to the test through fds 3 and 4.
			exe, err := os.Executable()
			if err != nil {
				say("error %v", err)
				continue
			}
			cmd := exec.Command(exe)
			cmd.Env = append(os.Environ(), journalChildEnv+"=inherit")
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.NewFile(3, "in"), os.NewFile(4, "out"), os.Stderr
			if err := cmd.Start(); err != nil {
				say("error %v", err)
				continue
			}
			go func() {
				cmd.Wait() //nolint:errcheck // killed on purpose
				say("reaped %d", cmd.Process.Pid)
			}()
		}
	}
}

// journalSupervisorMain is a supervisor in a process of its own, for
// TestJournalSIGKILL: the listener is fd 3, the journal's memfd fd 4. It
// resumes what the last one left, then answers every call with 0 until it
// is killed.
func journalSupervisorMain() {
	l, err := NewListener(os.NewFile(3, "listener"))
	if err != nil {
		fmt.Println("error", err)
		return
	}
	j, err := OpenJournal(os.NewFile(4, "journal"))
	if err != nil {
		fmt.Println("error", err)
		return
	}
	l.UseJournal(j)
	resumed, err := j.Resume(l)
	if err != nil {
		fmt.Println("error", err)
		return
	}
	for _, f := range resumed {
		if err := l.Return(f.Notif.ID, 0); err != nil {
			fmt.Println("error resumed", err)
			return
		}
	}
	fmt.Println("resumed", len(resumed))
	var n Notif
	for {
		if err := l.Receive(&n); err != nil {
			fmt.Println("error", err)
			return
		}
		if err := l.Return(n.ID, 0); err != nil && !errors.Is(err, ErrGone) {
			fmt.Println("error", err)
			return
		}
	}
}

// journalChild is the test's side of a child.
type journalChild struct {
	t     *testing.T
	pid   int
	in    io.WriteCloser
	lines chan string
	proc  *os.Process
	// for a spawned grandchild: its pipes
	gcIn  io.WriteCloser
	gcOut io.Reader
}

func childLines(r io.Reader) chan string {
	c := make(chan string, 64)
	go func() {
		s := bufio.NewScanner(r)
		for s.Scan() {
			c <- s.Text()
		}
		close(c)
	}()
	return c
}

// startJournalChild starts a filtered child and returns it and the
// supervisor's copy of its listener; the child's own copy is closed.
func startJournalChild(t *testing.T) (*journalChild, *os.File) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	gcInR, gcInW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	gcOutR, gcOutW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), journalChildEnv+"=filter")
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = []*os.File{gcInR, gcOutW}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	gcInR.Close()
	gcOutW.Close()
	c := &journalChild{t: t, pid: cmd.Process.Pid, in: in, lines: childLines(out), proc: cmd.Process, gcIn: gcInW, gcOut: gcOutR}
	t.Cleanup(func() {
		cmd.Process.Kill() //nolint:errcheck // may be gone already
		cmd.Wait()         //nolint:errcheck // killed
		gcInW.Close()
		gcOutR.Close()
	})
	c.expect("ready ")
	pidfdN, err := unix.PidfdOpen(c.pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	pidfd := os.NewFile(uintptr(pidfdN), "pidfd")
	defer pidfd.Close()
	lf, err := TakeListener(pidfd, c.pid, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.send("close")
	c.expect("closed")
	return c, lf
}

// spawn starts a second process under c's filter.
func (c *journalChild) spawn() *journalChild {
	c.t.Helper()
	c.send("spawn")
	g := &journalChild{t: c.t, in: c.gcIn, lines: childLines(c.gcOut)}
	f := strings.Fields(g.expect("ready "))
	pid, err := strconv.Atoi(f[1])
	if err != nil {
		c.t.Fatalf("spawned child said %q", f)
	}
	g.pid = pid
	return g
}

func (c *journalChild) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.in, line+"\n"); err != nil {
		c.t.Fatalf("tell child %q: %v", line, err)
	}
}

// expect returns the child's next line, which must start with prefix.
func (c *journalChild) expect(prefix string) string {
	c.t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			c.t.Fatalf("child ended; expected %q", prefix)
		}
		if !strings.HasPrefix(l, prefix) {
			c.t.Fatalf("child said %q, expected %q", l, prefix)
		}
		return l
	case <-time.After(10 * time.Second):
		c.t.Fatalf("child said nothing in 10s; expected %q", prefix)
	}
	return ""
}

// quiet checks the child says nothing for d: its calls still wait.
func (c *journalChild) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case l := <-c.lines:
		c.t.Fatalf("child said %q while its calls should wait", l)
	case <-time.After(d):
	}
}

// call makes the child call getpriority(PRIO_PROCESS, tag) and returns
// the notification sup receives for it.
func (c *journalChild) call(sup *Listener, tag int) Notif {
	c.t.Helper()
	c.send("call " + strconv.Itoa(tag))
	var n Notif
	if err := sup.Receive(&n); err != nil {
		c.t.Fatalf("receive call %d: %v", tag, err)
	}
	if n.Nr != unix.SYS_GETPRIORITY || n.Args[1] != uint64(tag) {
		c.t.Fatalf("received nr %d args %v, want getpriority of %d", n.Nr, n.Args[:2], tag)
	}
	return n
}

// journalSup is one supervisor's side: a listener on its copy of the
// listener fd and a journal on its copy of the memfd.
type journalSup struct {
	l *Listener
	j *Journal
}

func newJournalSup(t *testing.T, lf, jf *os.File, slots int) *journalSup {
	t.Helper()
	l, err := NewListener(lf)
	if err != nil {
		t.Fatal(err)
	}
	var j *Journal
	if jf == nil {
		j, err = CreateJournal(slots)
	} else {
		j, err = OpenJournal(jf)
	}
	if err != nil {
		t.Fatal(err)
	}
	l.UseJournal(j)
	return &journalSup{l: l, j: j}
}

// die is what the kernel does to a SIGKILLed supervisor: its copies of
// the listener and the memfd are closed.
func (s *journalSup) die(t *testing.T) {
	t.Helper()
	s.l.Shutdown()
	if err := errors.Join(s.l.Close(), s.j.Close()); err != nil {
		t.Fatal(err)
	}
}

// dupFile is the keeper's copy of f.
func dupFile(t *testing.T, f *os.File) *os.File {
	t.Helper()
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fd), f.Name())
}

func resumeAll(t *testing.T, s *journalSup) []InFlight {
	t.Helper()
	got, err := s.j.Resume(s.l)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestJournalTakeover(t *testing.T) {
	t.Run("keeper", func(t *testing.T) {
		c, lf := startJournalChild(t)
		keepL := dupFile(t, lf)
		a := newJournalSup(t, lf, nil, 8)
		keepJ := dupFile(t, a.j.File())
		n := c.call(a.l, 1)
		if a.j.InUse() != 1 {
			t.Fatalf("journal holds %d notifications, want 1", a.j.InUse())
		}
		a.die(t)
		c.quiet(200 * time.Millisecond) // no ENOSYS: the keeper holds the listener

		b := newJournalSup(t, keepL, keepJ, 0)
		defer b.die(t)
		got := resumeAll(t, b)
		if len(got) != 1 || got[0].Notif != n || got[0].Stage != StageReceived {
			t.Fatalf("resumed %+v, want %+v at stage received", got, n)
		}
		if err := b.l.Return(n.ID, 42); err != nil {
			t.Fatal(err)
		}
		if l := c.expect("ret 1 "); l != "ret 1 42 0" {
			t.Fatalf("child's call returned %q, want 42", l)
		}
		if b.j.InUse() != 0 {
			t.Fatalf("journal holds %d after the answer, want 0", b.j.InUse())
		}
		// B goes on receiving new calls into the same journal.
		n2 := c.call(b.l, 2)
		if err := b.l.Return(n2.ID, 43); err != nil {
			t.Fatal(err)
		}
		c.expect("ret 2 43 0")
	})
	t.Run("no keeper: ENOSYS", func(t *testing.T) {
		// The control: what the keeper prevents.
		c, lf := startJournalChild(t)
		a := newJournalSup(t, lf, nil, 8)
		c.call(a.l, 1)
		a.die(t)
		if l := c.expect("ret 1 "); l != fmt.Sprintf("ret 1 -1 %d", unix.ENOSYS) {
			t.Fatalf("child's call returned %q, want ENOSYS", l)
		}
	})
}

// TestJournalTakeoverStages: only what A left unanswered is resumed, each
// at the stage A recorded.
func TestJournalTakeoverStages(t *testing.T) {
	c, lf := startJournalChild(t)
	keepL := dupFile(t, lf)
	a := newJournalSup(t, lf, nil, 8)
	keepJ := dupFile(t, a.j.File())

	n1 := c.call(a.l, 1)
	if err := a.l.Return(n1.ID, 1); err != nil {
		t.Fatal(err)
	}
	c.expect("ret 1 1 0")
	n2 := c.call(a.l, 2) // received only
	n3 := c.call(a.l, 3)
	a.j.Stage(n3.ID, StagePerforming)
	n4 := c.call(a.l, 4)
	a.j.Stage(n4.ID, StagePerforming)
	a.j.Performed(n4.ID, 77, 0)
	n5 := c.call(a.l, 5)
	a.j.Performed(n5.ID, -1, unix.EEXIST)
	n6 := c.call(a.l, 6)
	if err := a.l.Fail(n6.ID, unix.EACCES); err != nil {
		t.Fatal(err)
	}
	c.expect(fmt.Sprintf("ret 6 -1 %d", unix.EACCES))
	a.die(t)

	b := newJournalSup(t, keepL, keepJ, 0)
	defer b.die(t)
	got := resumeAll(t, b)
	want := map[uint64]InFlight{
		n2.ID: {Notif: n2, Stage: StageReceived},
		n3.ID: {Notif: n3, Stage: StagePerforming},
		n4.ID: {Notif: n4, Stage: StagePerformed, Val: 77},
		n5.ID: {Notif: n5, Stage: StagePerformed, Val: -1, Errno: unix.EEXIST},
	}
	if len(got) != len(want) {
		t.Fatalf("resumed %d notifications, want %d (2 to 5): %+v", len(got), len(want), got)
	}
	for _, f := range got {
		if w, ok := want[f.Notif.ID]; !ok || f != w {
			t.Errorf("resumed %+v, want %+v", f, w)
		}
		// What a supervisor does with each stage.
		var err error
		switch f.Stage {
		case StagePerformed:
			if f.Errno != 0 {
				err = b.l.Fail(f.Notif.ID, f.Errno)
			} else {
				err = b.l.Return(f.Notif.ID, f.Val)
			}
		case StagePerforming:
			err = b.l.Fail(f.Notif.ID, unix.EIO)
		default:
			err = b.l.Return(f.Notif.ID, 100+int64(f.Notif.Args[1]))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	lines := map[string]bool{}
	for range 4 {
		lines[c.expect("ret ")] = true
	}
	for _, l := range []string{"ret 2 102 0", fmt.Sprintf("ret 3 -1 %d", unix.EIO), "ret 4 77 0", fmt.Sprintf("ret 5 -1 %d", unix.EEXIST)} {
		if !lines[l] {
			t.Errorf("child did not say %q; said %v", l, lines)
		}
	}
	if b.j.InUse() != 0 {
		t.Fatalf("journal holds %d after the answers, want 0", b.j.InUse())
	}
}

// TestJournalCallerKilled: a caller killed while its call is in flight is
// dropped by Resume; the other caller on the same filter is resumed.
func TestJournalCallerKilled(t *testing.T) {
	c, lf := startJournalChild(t)
	keepL := dupFile(t, lf)
	a := newJournalSup(t, lf, nil, 8)
	keepJ := dupFile(t, a.j.File())
	g := c.spawn()
	n1 := c.call(a.l, 1)
	n2 := g.call(a.l, 2)
	if n2.PID == n1.PID || a.j.InUse() != 2 {
		t.Fatalf("calls from threads %d and %d, %d in the journal: want two processes, 2", n1.PID, n2.PID, a.j.InUse())
	}
	a.die(t)
	if err := unix.Kill(g.pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.expect("reaped " + strconv.Itoa(g.pid))

	b := newJournalSup(t, keepL, keepJ, 0)
	defer b.die(t)
	got := resumeAll(t, b)
	if len(got) != 1 || got[0].Notif.ID != n1.ID {
		t.Fatalf("resumed %+v, want only the live caller's %d", got, n1.ID)
	}
	if b.j.InUse() != 1 {
		t.Fatalf("journal holds %d, want 1 (the dead caller's slot freed)", b.j.InUse())
	}
	if err := b.l.Return(n1.ID, 5); err != nil {
		t.Fatal(err)
	}
	c.expect("ret 1 5 0")
}

// TestJournalSIGKILL is the takeover under fire: a child's threads call
// without pause while supervisors, each a process of its own, are
// SIGKILLed one after the other at random moments (mid-RECV, mid-record,
// between an answer and its free); the test holds the keeper's copies and
// starts the next one. No call may fail (ENOSYS) or be lost (a thread
// that never returns), and none may get an answer but 0.
func TestJournalSIGKILL(t *testing.T) {
	const threads, rounds = 8, 60
	c, lf := startJournalChild(t)
	j, err := CreateJournal(DefaultJournalSlots)
	if err != nil {
		t.Fatal(err)
	}
	jf := dupFile(t, j.File())
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c.send("stress " + strconv.Itoa(threads))
	resumed := 0
	for round := range rounds {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), journalChildEnv+"=supervisor")
		cmd.ExtraFiles = []*os.File{lf, jf}
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := childLines(out)
		select {
		case l := <-lines:
			f := strings.Fields(l)
			if len(f) != 2 || f[0] != "resumed" {
				t.Fatalf("supervisor %d said %q", round, l)
			}
			k, _ := strconv.Atoi(f[1])
			resumed += k
		case <-time.After(10 * time.Second):
			t.Fatalf("supervisor %d did not resume in 10s", round)
		}
		time.Sleep(time.Duration(1+round%7) * time.Millisecond)
		if round == 0 {
			// While a supervisor lives, no other can take its journal.
			if k, err := OpenJournal(dupFile(t, jf)); !errors.Is(err, ErrJournalInUse) {
				if err == nil {
					k.Close()
				}
				t.Fatalf("OpenJournal while supervisor %d lives: %v, want ErrJournalInUse", round, err)
			}
		}
		if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait() //nolint:errcheck // killed
		for l := range lines {
			t.Fatalf("supervisor %d said %q", round, l)
		}
	}
	// The last supervisor stops the child's threads.
	b := newJournalSup(t, dupFile(t, lf), jf, 0)
	defer b.die(t)
	got := resumeAll(t, b)
	resumed += len(got)
	for _, f := range got {
		if err := b.l.Return(f.Notif.ID, journalStop); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan string, 1)
	go func() { done <- c.expect("stressed ") }()
	stopped := len(got)
	// A thread whose call was received and then lost waits for ever:
	// give up on it after a while.
	watchdog := time.AfterFunc(10*time.Second, b.l.Shutdown)
	defer watchdog.Stop()
	var n Notif
	for stopped < threads {
		if err := b.l.Receive(&n); err != nil {
			t.Fatalf("%d of %d threads still wait after 10s: their calls were lost (%v)", threads-stopped, threads, err)
		}
		if err := b.l.Return(n.ID, journalStop); err != nil {
			t.Fatal(err)
		}
		stopped++
	}
	l := <-done
	var calls, bad, errno int
	if _, err := fmt.Sscanf(l, "stressed %d bad %d errno %d", &calls, &bad, &errno); err != nil {
		t.Fatalf("child said %q: %v", l, err)
	}
	t.Logf("%d calls across %d supervisors killed; %d resumed", calls, rounds, resumed)
	if bad != 0 {
		t.Fatalf("%d calls of %d failed or got a wrong answer (last errno %d)", bad, calls, errno)
	}
	if calls < rounds*threads {
		t.Fatalf("only %d calls: the supervisors answered almost nothing", calls)
	}
}

// TestJournalShutdownWakesReceive: Shutdown ends a Receive blocked in
// poll while the filter still has users and nothing is pending, with and
// without a journal.
func TestJournalShutdownWakesReceive(t *testing.T) {
	for _, withJournal := range []bool{false, true} {
		t.Run(fmt.Sprint("journal=", withJournal), func(t *testing.T) {
			_, lf := startJournalChild(t)
			l, err := NewListener(lf)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if withJournal {
				j, err := CreateJournal(4)
				if err != nil {
					t.Fatal(err)
				}
				defer j.Close()
				l.UseJournal(j)
			}
			r := make(chan error, 1)
			go func() {
				var n Notif
				r <- l.Receive(&n)
			}()
			time.Sleep(100 * time.Millisecond) // in poll by now
			l.Shutdown()
			select {
			case err := <-r:
				if !errors.Is(err, ErrClosed) {
					t.Fatalf("Receive after Shutdown returned %v, want ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				l.Close() // poll then sees POLLNVAL
				t.Fatal("Receive blocked in poll still waits 5s after Shutdown")
			}
			l.Shutdown() // again: harmless
		})
	}
}

// TestJournalTorn: what Resume makes of slots a supervisor killed
// mid-record leaves.
func TestJournalTorn(t *testing.T) {
	c, lf := startJournalChild(t)
	keepL := dupFile(t, lf)
	a := newJournalSup(t, lf, nil, 8)
	keepJ := dupFile(t, a.j.File())

	// An answered notification, whose id a stale slot keeps below.
	n0 := c.call(a.l, 10)
	if err := a.l.Return(n0.ID, 0); err != nil {
		t.Fatal(err)
	}
	c.expect("ret 10 0 0")

	take := func() int32 {
		i, err := a.j.take(a.l)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	// Killed after RECV returned into the slot, before the commit.
	c.send("call 1")
	i1 := take()
	if err := recvNotif(a.l.fd, a.j.begin(i1)); err != nil {
		t.Fatal(err)
	}
	id1 := a.j.slot(i1).N.ID
	// Killed before RECV returned: a receiving slot, empty.
	a.j.begin(take())
	// A receiving slot with an old notification's content (the kernel
	// never writes it so, but Resume must not trust it).
	stale := a.j.begin(take())
	*stale = notifRaw{ID: n0.ID, Nr: unix.SYS_GETPRIORITY, Arch: unix.AUDIT_ARCH_X86_64}
	// A slot in flight whose stage word is not one kfv writes.
	n2 := c.call(a.l, 2)
	for i := range int32(a.j.slots) {
		if s := a.j.slot(i); s.state() == slotInFlight && s.N.ID == n2.ID {
			s.setStage(9)
		}
	}
	// A slot whose state word is not one kfv writes, nothing received.
	odd := a.j.slot(take())
	odd.N = notifRaw{}
	odd.setState(7)
	if a.j.InUse() != 5 {
		t.Fatalf("journal holds %d, want 5", a.j.InUse())
	}
	a.die(t)

	b := newJournalSup(t, keepL, keepJ, 0)
	defer b.die(t)
	if b.j.InUse() != 5 {
		t.Fatalf("reopened journal holds %d, want the 5 left", b.j.InUse())
	}
	got := resumeAll(t, b)
	stages := map[uint64]Stage{}
	for _, f := range got {
		stages[f.Notif.ID] = f.Stage
	}
	if len(got) != 2 || stages[id1] != StageReceived || stages[n2.ID] != StagePerforming {
		t.Fatalf("resumed %+v, want %d (received, never committed) and %d (unknown stage: performing)", got, id1, n2.ID)
	}
	if b.j.InUse() != 2 {
		t.Fatalf("journal holds %d after Resume, want 2", b.j.InUse())
	}
	for _, f := range got {
		if err := b.l.Return(f.Notif.ID, int64(f.Notif.Args[1])); err != nil {
			t.Fatal(err)
		}
	}
	lines := map[string]bool{c.expect("ret "): true, c.expect("ret "): true}
	if !lines["ret 1 1 0"] || !lines["ret 2 2 0"] {
		t.Fatalf("child said %v", lines)
	}
}

// TestJournalFull: with every slot in use, Receive waits and the next
// notification stays in the kernel; a freed slot, or one whose caller is
// gone, lets it through; Shutdown ends the wait.
func TestJournalFull(t *testing.T) {
	c, lf := startJournalChild(t)
	keepL := dupFile(t, lf)
	a := newJournalSup(t, lf, nil, 2)
	keepJ := dupFile(t, a.j.File())
	g := c.spawn()
	n1 := c.call(a.l, 1)
	g.call(a.l, 2)
	type recv struct {
		n   Notif
		err error
	}
	receive := func() chan recv {
		r := make(chan recv, 1)
		go func() {
			var n Notif
			err := a.l.Receive(&n)
			r <- recv{n, err}
		}()
		return r
	}
	c.send("call 3")
	r := receive()
	select {
	case got := <-r:
		t.Fatalf("Receive with a full journal returned %+v", got)
	case <-time.After(300 * time.Millisecond):
	}
	// An answer frees a slot: the waiting call comes through.
	if err := a.l.Return(n1.ID, 1); err != nil {
		t.Fatal(err)
	}
	c.expect("ret 1 1 0")
	var got recv
	select {
	case got = <-r:
	case <-time.After(5 * time.Second):
		t.Fatal("Receive still waits after a slot was freed")
	}
	if got.err != nil || got.n.Args[1] != 3 {
		t.Fatalf("Receive returned %+v, want call 3", got)
	}
	n3 := got.n

	// Full again (2, 3). A caller gone without an answer or an IDValid
	// (a leak) is found by the waiting Receive.
	c.send("call 4")
	r = receive()
	if err := unix.Kill(g.pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.expect("reaped " + strconv.Itoa(g.pid))
	select {
	case got = <-r:
	case <-time.After(5 * time.Second):
		t.Fatal("Receive still waits after a caller in the journal died")
	}
	if got.err != nil || got.n.Args[1] != 4 {
		t.Fatalf("Receive returned %+v, want call 4", got)
	}
	n4 := got.n

	// Full (3, 4): Shutdown ends a waiting Receive.
	r = receive()
	time.Sleep(100 * time.Millisecond)
	a.l.Shutdown()
	select {
	case got = <-r:
	case <-time.After(5 * time.Second):
		t.Fatal("Receive still waits after Shutdown")
	}
	if !errors.Is(got.err, ErrClosed) {
		t.Fatalf("Receive after Shutdown returned %+v, want ErrClosed", got)
	}
	// A full journal hands over like any other.
	a.die(t)
	b := newJournalSup(t, keepL, keepJ, 0)
	defer b.die(t)
	res := resumeAll(t, b)
	if len(res) != 2 {
		t.Fatalf("resumed %+v, want calls 3 and 4", res)
	}
	for _, n := range []Notif{n3, n4} {
		if err := b.l.Return(n.ID, int64(n.Args[1])); err != nil {
			t.Fatal(err)
		}
	}
	lines := map[string]bool{c.expect("ret "): true, c.expect("ret "): true}
	if !lines["ret 3 3 0"] || !lines["ret 4 4 0"] {
		t.Fatalf("child said %v", lines)
	}
}

// BenchmarkJournalRoundTrip: one notification received and answered
// (Return), without and with a journal. The difference is the journal's
// cost per notification. "interleaved" switches the journal on and off
// every 256 notifications on one child and reports both means, so that
// the machine's drift falls on both alike.
func BenchmarkJournalRoundTrip(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchRoundTrip(b, "plain") })
	b.Run("journal", func(b *testing.B) { benchRoundTrip(b, "journal") })
	b.Run("interleaved", func(b *testing.B) { benchRoundTrip(b, "interleaved") })
}

func benchRoundTrip(b *testing.B, mode string) {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), journalChildEnv+"=filter")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill() //nolint:errcheck // may be gone
		cmd.Wait()         //nolint:errcheck // killed
	}()
	lines := childLines(out)
	<-lines // ready
	pidfdN, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		b.Fatal(err)
	}
	pidfd := os.NewFile(uintptr(pidfdN), "pidfd")
	defer pidfd.Close()
	lf, err := TakeListener(pidfd, cmd.Process.Pid, 10*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	l, err := NewListener(lf)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	j, err := CreateJournal(DefaultJournalSlots)
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	if mode == "journal" {
		l.UseJournal(j)
	}
	io.WriteString(in, "loop\n") //nolint:errcheck // checked by the receives
	var n Notif
	roundTrip := func() {
		if err := l.Receive(&n); err != nil {
			b.Fatal(err)
		}
		if err := l.Return(n.ID, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	if mode != "interleaved" {
		for range b.N {
			roundTrip()
		}
	} else {
		const block = 256
		var spent [2]time.Duration
		var count [2]int
		for i := 0; i < b.N; i += block {
			k := (i / block) % 2
			l.journal = nil
			if k == 1 {
				l.journal = j
			}
			t0 := time.Now()
			for range min(block, b.N-i) {
				roundTrip()
			}
			spent[k] += time.Since(t0)
			count[k] += min(block, b.N-i)
		}
		for k, unit := range []string{"plain-ns/notif", "journal-ns/notif"} {
			if count[k] > 0 {
				b.ReportMetric(float64(spent[k].Nanoseconds())/float64(count[k]), unit)
			}
		}
	}
	b.StopTimer()
	l.journal = nil
	if err := l.Receive(&n); err != nil {
		b.Fatal(err)
	}
	if err := l.Return(n.ID, journalStop); err != nil {
		b.Fatal(err)
	}
	<-lines // looped
}
