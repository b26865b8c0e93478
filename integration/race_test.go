package integration

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/profiles"
	"kfv/seccompnotify"
)

// The TOCTOU race tests (emulation instead of continue), with the implant
// inside real QEMU: the raw trigger guest asks for race-open,
// race-connect, race-unlink, race-sendmsg or race-sendmmsg through a
// vCPU's port I/O, and QEMU's main thread then makes raceAttempts calls
// with an argument that another thread keeps rewriting between an allowed
// object and a forbidden one (see p_race in implant/implant.c). The
// allowed objects are on QEMU's command line (a read-only drive, the
// pidfile, a socket chardev), so under kfv-run the policy is the one
// derived from it, with the built-in profile; the forbidden ones are known
// to the implant only.
// Under kfv-run, whose supervisor performs the opens, unlinks, connects
// and sends it allows, no call may reach the forbidden object; under a
// naive supervisor that checks the argument and answers CONTINUE
// (naiveStart, below), some do, which shows the race is real on this
// machine.

const raceAttempts = 100000

// raceVM is one race: QEMU's arguments and environment, and the two
// objects in the form the implant and the naive check compare.
type raceVM struct {
	payload            string
	qargs, env         []string
	allowed, forbidden string // the payload's
	// On QEMU's command line: a read-only drive, a pidfile (QEMU may
	// remove what it creates), a chardev's address.
	allowedPath, pidfile, allowedAddr string
	// datagrams counts what reached race-sendmsg's or race-sendmmsg's
	// forbidden UDP port.
	datagrams func() int64
	// streamed counts the bytes of race-sendmmsg's messages that reached
	// the allowed TCP peer.
	streamed func() int64
}

// forbiddenSeen is the number of calls that reached the forbidden object:
// the implant's count, or for the sends the datagrams that arrived
// (the implant cannot see where its sends went).
func (r *raceVM) forbiddenSeen(rep raceReport) int {
	if r.datagrams == nil {
		return rep.forbidden
	}
	time.Sleep(200 * time.Millisecond) // datagrams in flight
	return int(r.datagrams())
}

func newRaceVM(t *testing.T, payload string) *raceVM {
	t.Helper()
	dir := t.TempDir()
	allowedPath, forbiddenPath := filepath.Join(dir, "allowed"), filepath.Join(dir, "secret!")
	for p, c := range map[string]string{allowedPath: "allowed\n", forbiddenPath: "secret\n"} {
		if err := os.WriteFile(p, append([]byte(c), make([]byte, 4096-len(c))...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	allowedAddr, forbiddenAddr, streamed := raceListeners(t)
	_, port, _ := net.SplitHostPort(allowedAddr)
	r := &raceVM{payload: payload, allowedPath: allowedPath, pidfile: filepath.Join(dir, "vm1.pid"), allowedAddr: allowedAddr}
	qemuReachable(t, dir)
	r.qargs = append(rawReactArgs(t, payload, strconv.Itoa(raceAttempts)),
		"-drive", "file="+allowedPath+",if=none,id=race,format=raw,readonly=on",
		"-pidfile", r.pidfile,
		"-chardev", "socket,id=race,host=127.0.0.1,port="+port,
		"-name", "kfv-race,debug-threads=on")
	switch payload {
	case "race-open":
		r.allowed, r.forbidden = allowedPath, forbiddenPath
	case "race-connect":
		r.allowed, r.forbidden = allowedAddr, forbiddenAddr
	case "race-unlink":
		r.allowed, r.forbidden = r.pidfile, forbiddenPath
	case "race-sendmsg":
		r.allowed = allowedAddr
		r.forbidden, r.datagrams = datagramCounter(t)
	case "race-sendmmsg":
		r.allowed, r.streamed = allowedAddr, streamed
		r.forbidden, r.datagrams = datagramCounter(t)
	}
	r.env = []string{"LD_PRELOAD=" + buildImplant(t), "KFV_RACE_ALLOWED=" + r.allowed, "KFV_RACE_FORBIDDEN=" + r.forbidden}
	return r
}

// raceListeners starts two TCP listeners on the loopback that accept
// connections and read them until the other end closes. streamed counts
// the bytes of the allowed listener's connections that begin with
// sendmmsgMark (race-sendmmsg's; QEMU's chardev sends nothing).
func raceListeners(t *testing.T) (allowed, forbidden string, streamed func() int64) {
	var addrs []string
	var marked atomic.Int64
	for i := 0; i < 2; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				count := i == 0
				go func() {
					defer c.Close()
					if count {
						countMarked(c, &marked)
					}
					io.Copy(io.Discard, c)
				}()
			}
		}()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs[0], addrs[1], marked.Load
}

// datagramCounter listens on a UDP port of the loopback and counts what
// arrives: the forbidden destination of race-sendmsg and race-sendmmsg.
func datagramCounter(t *testing.T) (addr string, count func() int64) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var n atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	return c.LocalAddr().String(), n.Load
}

// raceReport is the implant's report of one race.
type raceReport struct {
	result                               string
	tid                                  int
	thread, errno                        string
	attempts, allowed, forbidden, denied int
	// extra holds the KEY=VALUE fields after errno (race-sendmmsg's).
	extra map[string]string
}

var raceDetailRE = regexp.MustCompile(`^tid=(\d+) thread=(.*) attempts=(\d+) allowed=(\d+) forbidden=(\d+) denied=(\d+) errno=(\S+)((?: \S+=\S+)*)$`)

// waitRaceReport waits up to within for the implant's report of payload
// in QEMU qemuPID and parses it; the race must have made attempts calls.
func waitRaceReport(t *testing.T, p *proc, qemuPID int, payload string, attempts int, within time.Duration) raceReport {
	t.Helper()
	var rep implantReport
	if !waitFor(within, func() bool {
		rep = parseImplant(p.stderr.String(), payload)
		return rep.Result != "" || p.exited()
	}) || rep.Result == "" {
		t.Fatalf("no report of %s from the implant\nconsole:\n%s\nstderr:\n%s", payload, tail(p.stdout.String(), 20), tail(p.stderr.String(), 30))
	}
	if !rep.loadedIn(qemuPID) {
		t.Fatalf("the implant did not load into QEMU (pid %d), so this run proves nothing\nstderr:\n%s", qemuPID, p.stderr)
	}
	m := raceDetailRE.FindStringSubmatch(rep.Detail)
	if m == nil {
		t.Fatalf("implant: %s result=%s detail=%s: the race did not run", payload, rep.Result, rep.Detail)
	}
	out := raceReport{result: rep.Result, thread: m[2], errno: m[7], extra: map[string]string{}}
	for _, f := range strings.Fields(m[8]) {
		k, v, _ := strings.Cut(f, "=") // the pattern admits KEY=VALUE only
		out.extra[k] = v
	}
	for i, v := range []*int{&out.tid, nil, &out.attempts, &out.allowed, &out.forbidden, &out.denied} {
		if v != nil {
			*v, _ = strconv.Atoi(m[i+1]) // the pattern admits digits only
		}
	}
	if out.attempts != attempts {
		t.Fatalf("the implant made %d attempts, want %d", out.attempts, attempts)
	}
	return out
}

// wait waits for the implant's report of r's race in QEMU qemuPID.
func (r *raceVM) wait(t *testing.T, p *proc, qemuPID int) raceReport {
	t.Helper()
	out := waitRaceReport(t, p, qemuPID, r.payload, raceAttempts, 3*time.Minute)
	// The race is between two verdicts only if the calls came from the
	// thread the allowed object is allowed to: QEMU's main thread.
	if out.tid != qemuPID {
		t.Fatalf("the race ran in thread %d %q, not QEMU's main thread %d", out.tid, out.thread, qemuPID)
	}
	return out
}

// stop ends QEMU (SIGTERM, forwarded by kfv-run) and waits for it.
func (r *raceVM) stop(t *testing.T, p *proc) {
	t.Helper()
	p.cmd.Process.Signal(unix.SIGTERM)
	if st := p.wait(t, time.Minute); st != 0 {
		t.Errorf("%s exited with status %d after SIGTERM, want 0\nstderr:\n%s", filepath.Base(p.cmd.Args[0]), st, tail(p.stderr.String(), 30))
	}
}

// decisions says how many decisions an event stands for: one for a
// decision line, its count for a folded one (a flood is folded past a
// budget: docs/events.md; a folded line carries the last one's thread).
func decisions(e event.Event) (int, bool) {
	switch {
	case e.Kind == event.KindDecision:
		return 1, true
	case e.Kind == event.KindFolded && e.Detector == "":
		return e.Count, true
	}
	return 0, false
}

// profileWithout is the built-in profile without the [[correlate]] rules
// named, written in dir.
func profileWithout(t *testing.T, dir string, correlations ...string) string {
	t.Helper()
	src, err := profiles.BuiltinSource("qemu")
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	removed := 0
	for _, block := range strings.Split(string(src), "\n\n") {
		drop := false
		for _, name := range correlations {
			if strings.Contains(block, "[[correlate]]") && strings.Contains(block, `name = "`+name+`"`) {
				drop = true
			}
		}
		if drop {
			removed++
			continue
		}
		kept = append(kept, block)
	}
	if removed != len(correlations) {
		t.Fatalf("removed %d of the correlations %v from the built-in profile", removed, correlations)
	}
	path := filepath.Join(dir, "profile.toml")
	if err := os.WriteFile(path, []byte(strings.Join(kept, "\n\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRaceEmulated(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	for _, c := range []struct{ payload, syscall string }{{"race-open", "openat"}, {"race-connect", "connect"}, {"race-unlink", "unlink"}, {"race-sendmsg", "sendmsg"}, {"race-sendmmsg", "sendmmsg"}} {
		t.Run(c.payload, func(t *testing.T) {
			r := newRaceVM(t, c.payload)
			events := filepath.Join(t.TempDir(), "events.jsonl")
			start := time.Now()
			// Thousands of refusals: the built-in ladder would pause the
			// VM after three (QEMU frozen, the race never reported).
			// This test is about what each call reaches, not the ladder.
			prof := profileWithout(t, t.TempDir(), "repeated-denials")
			p := startEnv(t, kfvArgs(events, []string{"--mode", "enforce", "--profile", prof}, qemu, r.qargs...), r.env...)
			qemuPID := childPID(t, p.cmd.Process.Pid)
			rep := r.wait(t, p, qemuPID)
			t.Logf("under kfv-run: %+v in %v", rep, time.Since(start).Round(time.Millisecond))
			if f := r.forbiddenSeen(rep); f != 0 && r.datagrams != nil {
				t.Errorf("%d datagrams of %d %s calls reached the forbidden port under kfv-run", f, rep.attempts, c.syscall)
			} else if f != 0 {
				t.Errorf("%d of %d %s calls reached the forbidden object under kfv-run", f, rep.attempts, c.syscall)
			}
			if rep.allowed == 0 || rep.denied == 0 {
				t.Errorf("the race did not run both ways (allowed %d, denied %d): it proves nothing", rep.allowed, rep.denied)
			}
			if p.exited() {
				t.Fatalf("kfv-run ended during the race\nstderr:\n%s", tail(p.stderr.String(), 30))
			}
			if c.payload == "race-sendmmsg" {
				checkSendmmsgResults(t, r, rep)
			}
			r.stop(t, p)
			evs := readEvents(t, events)
			if c.payload == "race-sendmmsg" {
				checkSendmmsgEvents(t, rep, evs)
				return
			}
			// The refusals are the policy's, of the racing thread's calls.
			var denied int
			rules := map[string]int{}
			for _, e := range evs {
				if n, ok := decisions(e); ok && e.Verdict == "deny" && e.TID == rep.tid && e.Syscall == c.syscall {
					denied += n
					rules[e.Rule+" "+e.Errno] += n
				}
			}
			t.Logf("deny events of the racing thread: %d, by rule and errno: %v", denied, rules)
			switch {
			case c.payload == "race-sendmsg" && denied == 0:
				// Its failures also include sends without an address
				// on the UDP socket (EDESTADDRREQ, as natively).
				t.Errorf("no deny of sendmsg by the racing thread %d", rep.tid)
			case c.payload != "race-sendmsg" && denied < rep.denied:
				t.Errorf("the implant saw %d refusals, the event stream holds %d denies of %s by its thread %d", rep.denied, denied, c.syscall, rep.tid)
			}
		})
	}
}

// TestRaceNaiveContinue runs the same races under naiveStart's supervisor,
// which decides on the buffer it read and answers CONTINUE. The forbidden
// object must be reached at least once: otherwise TestRaceEmulated proves
// nothing on this machine.
func TestRaceNaiveContinue(t *testing.T) {
	qemu := needQEMU(t)
	for _, payload := range []string{"race-open", "race-connect", "race-unlink", "race-sendmsg", "race-sendmmsg"} {
		t.Run(payload, func(t *testing.T) {
			// One forbidden success shows the race. The odds per attempt
			// vary from run to run (race-sendmsg and race-sendmmsg have
			// to win two races at once: from about 1 in 20 down to 1 in
			// 200 seen here for race-sendmsg),
			// so a run without one is repeated, up to three runs.
			total := 0
			for run := 1; run <= 3 && total == 0; run++ {
				r := newRaceVM(t, payload)
				p := naiveStart(t, []string{r.allowedPath, r.pidfile}, r.allowedAddr, append([]string{qemu}, r.qargs...), r.env...)
				rep := r.wait(t, p, p.cmd.Process.Pid)
				total = r.forbiddenSeen(rep)
				t.Logf("run %d under a check-then-continue supervisor: %+v; %d calls reached the forbidden object", run, rep, total)
				r.stop(t, p)
			}
			if total == 0 {
				t.Errorf("no call reached the forbidden object in three runs of %d attempts under check-then-continue: the race was not shown", raceAttempts)
			}
		})
	}
}

// naiveConnectedStream says whether fd of the process behind pidfd is a
// connected stream socket, as seen on a copy taken now.
func naiveConnectedStream(pidfd *os.File, fd int) bool {
	f, err := seccompnotify.TakeFD(pidfd, fd)
	if err != nil {
		return false
	}
	defer f.Close()
	typ, err := seccompnotify.SocketType(f)
	if err != nil || typ != unix.SOCK_STREAM {
		return false
	}
	_, err = unix.Getpeername(int(f))
	return err == nil
}

// naiveForbiddenHVA is the host page race-memslot's slot must not map
// (KFV_RACE_FORBIDDEN in env, hex); 0 without one.
func naiveForbiddenHVA(env []string) uint64 {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "KFV_RACE_FORBIDDEN="); ok {
			if a, err := strconv.ParseUint(v, 16, 64); err == nil {
				return a
			}
		}
	}
	return 0
}

// naiveSlotOK reads the kvm_userspace_memory_region at addr of thread
// tid and its mappings, as kfv's decoder does, and says whether the slot
// stays off the forbidden page.
func naiveSlotOK(tid int, addr, forbidden uint64) bool {
	b := make([]byte, 32)
	if seccompnotify.ReadMem(tid, addr, b) != nil {
		return false
	}
	size, hva := binary.NativeEndian.Uint64(b[16:]), binary.NativeEndian.Uint64(b[24:])
	if _, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/maps"); err != nil {
		return false
	}
	return size == 0 || forbidden == 0 || hva+size <= forbidden || hva >= forbidden+4096
}

// naiveLoaderEnv makes this test binary a loader for naiveSupervise: it
// loads the filter from the file named and execs its argv.
const naiveLoaderEnv = "KFV_TEST_NAIVE_LOADER"

func init() {
	if os.Getenv(naiveLoaderEnv) != "" {
		// The loading thread must be the one that execs: init runs on
		// the main thread.
		runtime.LockOSThread()
	}
}

type naiveSpec struct {
	Path string   `json:"path"`
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Prog []byte   `json:"prog"`
}

// naiveLoaderMain is the loader side of naiveSupervise.
func naiveLoaderMain(specFile string) {
	b, err := os.ReadFile(specFile)
	var spec naiveSpec
	if err == nil {
		err = json.Unmarshal(b, &spec)
	}
	var prog []unix.SockFilter
	if err == nil {
		prog, err = seccompnotify.DecodeProg(spec.Prog)
	}
	if err == nil {
		err = seccompnotify.LoadAndExec(&seccompnotify.ExecSpec{Path: spec.Path, Argv: spec.Argv, Env: spec.Env, Prog: prog})
	}
	fmt.Fprintln(os.Stderr, "naive loader:", err)
	os.Exit(125)
}

// naiveEnv is the value of the variable name in env ("" without one).
func naiveEnv(env []string, name string) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, name+"="); ok {
			return v
		}
	}
	return ""
}

// naiveLibrary says whether fd of thread tid refers, as read now, to a
// library (a file under a lib/x86_64-linux-gnu directory: the system's,
// or that of a QEMU installed elsewhere) or to the preloaded implant
// (preload), as kfv's rule exec-libraries admits them.
func naiveLibrary(tid, fd int, preload string) bool {
	target, err := os.Readlink("/proc/" + strconv.Itoa(tid) + "/fd/" + strconv.Itoa(fd))
	if err != nil {
		return false
	}
	return strings.HasPrefix(target, "/") && strings.Contains(target, "/lib/x86_64-linux-gnu/") || preload != "" && target == preload
}

// naiveAnonymous says whether every mapping of thread tid under
// [addr, addr+size), as read now in /proc/TID/task/TID/maps, is
// anonymous memory (no file, no name).
func naiveAnonymous(tid int, addr, size uint64) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/maps", tid, tid))
	if err != nil {
		return false
	}
	seen := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil || end <= addr || start >= addr+size {
			continue
		}
		if f[4] != "0" || len(f) > 5 {
			return false
		}
		seen = true
	}
	return seen
}

// naiveStart starts argv under a filter that notifies opens, unlinks,
// connects and sends, and answers them the unsafe way: read the argument,
// compare it with the allowed paths or address, and CONTINUE or fail.
// Every other open or unlink passes unless it names something beside the
// allowed paths, in their directory; a sendmsg or sendmmsg passes when it
// names no address, on a connected stream socket. mmap and mprotect with
// PROT_EXEC are decided as kfv decided them before it held QEMU still:
// an mmap by what its fd refers to (a library, naiveLibrary), an
// mprotect by the mappings under the range (anonymous, naiveAnonymous).
func naiveStart(t *testing.T, allowedPaths []string, allowedAddr string, argv []string, env ...string) *proc {
	t.Helper()
	p, err := profiles.Parse("naive.toml", []byte(`name = "naive"
[defaults]
action = "allow"
[[syscall]]
names = ["open", "openat", "openat2", "creat", "connect", "sendto", "sendmsg", "sendmmsg", "unlink", "unlinkat", "rmdir"]
action = "inspect"
reason = "the race"
[[syscall]]
names = ["open_by_handle_at"]
action = "deny"
reason = "an open around paths"
[[syscall]]
names = ["ioctl"]
action = "inspect"
args = [{ index = 1, op = "eq", value = "KVM_SET_USER_MEMORY_REGION" }]
reason = "the memory-slot race"
[[syscall]]
names = ["mmap", "mprotect", "pkey_mprotect"]
action = "inspect"
args = [{ index = 2, op = "masked_eq", mask = "PROT_EXEC", value = "PROT_EXEC" }]
reason = "the executable-mapping races"
[[syscall]]
names = ["remap_file_pages"]
action = "deny"
reason = "around the mmap checks"
`))
	if err != nil {
		t.Fatal(err)
	}
	f, err := seccompnotify.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := json.Marshal(naiveSpec{Path: argv[0], Argv: argv, Env: append(os.Environ(), env...), Prog: seccompnotify.EncodeProg(f.Prog)})
	if err != nil {
		t.Fatal(err)
	}
	specFile := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(specFile, spec, 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	forbiddenHVA := naiveForbiddenHVA(env)
	preload := naiveEnv(env, "LD_PRELOAD")
	proc := startEnv(t, []string{exe}, naiveLoaderEnv+"="+specFile, "GODEBUG=asyncpreemptoff=1")
	pidfdN, err := unix.PidfdOpen(proc.cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	pidfd := os.NewFile(uintptr(pidfdN), "pidfd")
	lf, err := seccompnotify.TakeListener(pidfd, proc.cmd.Process.Pid, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	l, err := seccompnotify.NewListener(lf)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		l.Shutdown()
		<-done
		l.Close()
		pidfd.Close()
	})
	go func() {
		defer close(done)
		var n seccompnotify.Notif
		for {
			if err := l.Receive(&n); err != nil {
				return
			}
			ok := true
			pathOK := func(arg uint64) bool {
				s, err := seccompnotify.ReadString(n.PID, arg, 4096)
				return err == nil && (contains(allowedPaths, s) || !strings.HasPrefix(s, filepath.Dir(allowedPaths[0])+"/"))
			}
			switch f.Names[n.Nr] {
			case "openat", "unlinkat":
				ok = pathOK(n.Args[1])
			case "unlink":
				ok = pathOK(n.Args[0])
			case "connect":
				b := make([]byte, 16)
				if seccompnotify.ReadMem(n.PID, n.Args[1], b) != nil {
					ok = false
					break
				}
				sa, err := seccompnotify.ParseSockaddr(b)
				ok = err == nil && sa.Addr.String() == allowedAddr
			case "sendmsg":
				// What kfv checked before it emulated sendmsg: no
				// address in the message, a connected stream socket.
				h := make([]byte, 16)
				ok = seccompnotify.ReadMem(n.PID, n.Args[1], h) == nil && binary.NativeEndian.Uint64(h) == 0 && naiveConnectedStream(pidfd, int(int32(n.Args[0])))
			case "sendmmsg":
				// The same check of every message in the vector, then
				// CONTINUE: what kfv did with sendmmsg before it
				// performed it (the decoder read every msg_name,
				// checkSendMsg the fd).
				ok = naiveNoAddressInVector(n.PID, n.Args[1], n.Args[2]) && naiveConnectedStream(pidfd, int(int32(n.Args[0])))
			case "ioctl":
				// KVM_SET_USER_MEMORY_REGION: what kfv did before it held
				// QEMU still: read the slot and the caller's mappings,
				// refuse a slot over host memory (here the page the
				// implant names), CONTINUE the rest.
				ok = naiveSlotOK(n.PID, n.Args[2], forbiddenHVA)
			case "mmap":
				// PROT_EXEC: what kfv did before it held QEMU still,
				// decide by what the fd number refers to now.
				ok = n.Args[3]&unix.MAP_ANONYMOUS != 0 || naiveLibrary(n.PID, int(int32(n.Args[4])), preload)
			case "mprotect", "pkey_mprotect":
				// PROT_EXEC: decide by the mappings under the range now.
				ok = naiveAnonymous(n.PID, n.Args[0], n.Args[1])
			}
			var rerr error
			if ok {
				rerr = l.Continue(n.ID) // the mistake this helper exists to show
			} else {
				rerr = l.Fail(n.ID, unix.EACCES)
			}
			if rerr != nil && !errors.Is(rerr, seccompnotify.ErrGone) {
				t.Errorf("answer: %v", rerr)
			}
		}
	}()
	return proc
}
