package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"kfv/event"
	"kfv/guest"
)

// The executable-mapping races (race-mmap, race-mmap-main and
// race-mprotect-main in implant/implant.c): inside real QEMU a thread
// keeps changing what an executable mapping call would map while another
// makes the call, execAttempts times.
//
//   - mmap(PROT_READ|PROT_EXEC, MAP_PRIVATE, fd N): a swapper dup2s a
//     library kfv admits (execAllowedLib) and a memfd holding a page of
//     'F' onto N in turn. A mapping whose first byte is 'F' is the memfd
//     made executable. From the vCPU thread that got the port trigger
//     (race-mmap) and from QEMU's main thread (race-mmap-main), under KVM.
//   - mprotect(A, PROT_READ|PROT_EXEC): a swapper moves (mremap) an
//     anonymous page and the memfd's page to A and back in turn; a moved
//     mapping keeps its protection, so after each success the caller
//     finds which one became executable. The memfd is the race won. From QEMU's main thread under
//     TCG, the only place kfv lets anonymous memory become executable
//     (rule tcg-code-buffer); the Linux guest's block write triggers it.
//
// kfv decides these calls from the fd's target or the mapping under the
// range and lets them continue, since a mapping is made in the caller's
// own address space; what makes the kernel act on what kfv checked is the
// hold of QEMU's other threads (supervisor/memhold_linux.go). Bare, both
// outcomes happen (the payload works); under a check-then-continue
// supervisor the forbidden one does (the race is winnable here); under
// kfv it may not.

const execAttempts = 10000

// execAllowedLib is the library the races map: one exec-libraries admits.
const execAllowedLib = "/usr/lib/x86_64-linux-gnu/libc.so.6"

type execRun struct {
	payload string
	qargs   []string
	env     []string
}

func newExecRun(t *testing.T, payload string) *execRun {
	t.Helper()
	r := &execRun{payload: payload}
	n := strconv.Itoa(execAttempts)
	if payload == "race-mprotect-main" {
		// TCG whatever KFV_LINUX_ACCEL says: only there may anonymous
		// memory become executable.
		l := attackLinuxGuest(t)
		disk := filepath.Join(t.TempDir(), "disk.img")
		if err := os.WriteFile(disk, nil, 0o600); err != nil {
			t.Fatalf("create disk: %v", err)
		}
		if err := os.Truncate(disk, 16<<20); err != nil {
			t.Fatalf("size disk: %v", err)
		}
		words, err := guest.TriggerCmdline(payload, n, 600)
		if err != nil {
			t.Fatal(err)
		}
		r.qargs = append(guest.LinuxArgs(l, "tcg", guest.WorkloadTrigger, words...), guest.DiskArgs(disk, "raw")...)
	} else {
		r.qargs = rawReactArgs(t, payload, n)
	}
	r.qargs = append(r.qargs, "-name", "kfv-race,debug-threads=on")
	if _, err := os.Stat(execAllowedLib); err != nil {
		t.Skipf("the allowed half of the race maps %s: %v", execAllowedLib, err)
	}
	r.env = []string{"LD_PRELOAD=" + buildImplant(t), "KFV_RACE_ALLOWED=" + execAllowedLib, "KFV_RACE_FORBIDDEN=memfd"}
	return r
}

// wait returns the implant's report of the race in QEMU qemuPID.
func (r *execRun) wait(t *testing.T, p *proc, qemuPID int) raceReport {
	t.Helper()
	out := waitRaceReport(t, p, qemuPID, r.payload, execAttempts, 8*time.Minute)
	if main := strings.HasSuffix(r.payload, "-main"); main != (out.tid == qemuPID) || !main && !strings.HasPrefix(out.thread, "CPU ") {
		t.Fatalf("%s ran in thread %d %q (QEMU %d)", r.payload, out.tid, out.thread, qemuPID)
	}
	if out.extra["other"] != "0" {
		t.Errorf("%s: %s mappings showed neither the library nor the memfd: the check is broken", r.payload, out.extra["other"])
	}
	return out
}

// execSyscall is the call a payload races.
func execSyscall(payload string) string {
	if payload == "race-mprotect-main" {
		return "mprotect"
	}
	return "mmap"
}

// execCallArgsRE finds the registers in a decision's args field.
var execCallArgsRE = regexp.MustCompile(`args=\[([^\]]*)\]`)

// execRaceCall says whether a decision's args field (event.Event.Args)
// is one of the race's own calls: an mmap of the implant's fd 200
// (XRACE_FD), an mprotect at its address (XRACE_ADDR).
func execRaceCall(syscall, args string) bool {
	m := execCallArgsRE.FindStringSubmatch(args)
	if m == nil {
		return false
	}
	regs := strings.Fields(m[1])
	if syscall == "mprotect" {
		return len(regs) > 0 && regs[0] == "0x6e0000000000"
	}
	return len(regs) > 4 && regs[4] == "0xc8"
}

// TestRaceExecMap races mmap with PROT_EXEC against dup2 (KVM).
func TestRaceExecMap(t *testing.T) {
	testRaceExec(t, "race-mmap", "race-mmap-main")
}

// TestRaceExecProtect races mprotect with PROT_EXEC against MAP_FIXED
// (TCG).
func TestRaceExecProtect(t *testing.T) {
	testRaceExec(t, "race-mprotect-main")
}

func testRaceExec(t *testing.T, payloads ...string) {
	qemu := needQEMU(t)
	for _, payload := range payloads {
		t.Run(payload, func(t *testing.T) {
			rate := func(n, of int) float64 { return 100 * float64(n) / float64(of) }
			t.Run("bare", func(t *testing.T) {
				r := newExecRun(t, payload)
				start := time.Now()
				p := startEnv(t, append([]string{qemu}, r.qargs...), r.env...)
				rep := r.wait(t, p, p.cmd.Process.Pid)
				t.Logf("bare: %+v in %v; forbidden %.2f%%, allowed %.2f%% of the calls", rep, time.Since(start).Round(time.Millisecond), rate(rep.forbidden, rep.attempts), rate(rep.allowed, rep.attempts))
				if rep.denied != 0 || rep.forbidden == 0 || rep.allowed == 0 {
					t.Errorf("bare QEMU: allowed %d, forbidden %d, refused %d of %d: want both mapped and no refusal, or the payload proves nothing", rep.allowed, rep.forbidden, rep.denied, rep.attempts)
				}
				stopQEMU(t, p)
			})
			t.Run("naive", func(t *testing.T) {
				total := 0
				for run := 1; run <= 3 && total == 0; run++ {
					r := newExecRun(t, payload)
					p := naiveStart(t, []string{filepath.Join(t.TempDir(), "none")}, "", append([]string{qemu}, r.qargs...), r.env...)
					rep := r.wait(t, p, p.cmd.Process.Pid)
					total = rep.forbidden
					t.Logf("run %d under a check-then-continue supervisor: %+v; %d calls made the memfd executable (%.2f%% of the calls)", run, rep, total, rate(total, rep.attempts))
					stopQEMU(t, p)
				}
				if total == 0 {
					t.Errorf("no call made the memfd executable in three runs of %d under check-then-continue: the race was not shown", execAttempts)
				}
			})
			t.Run("kfv", func(t *testing.T) {
				needKfv(t)
				r := newExecRun(t, payload)
				start := time.Now()
				p, qemuPID, events := startRaceKfv(t, payload, qemu, r.qargs, r.env)
				rep := r.wait(t, p, qemuPID)
				t.Logf("under kfv-run: %+v in %v", rep, time.Since(start).Round(time.Millisecond))
				if rep.forbidden != 0 {
					t.Errorf("%d of %d calls made the memfd executable under kfv-run", rep.forbidden, rep.attempts)
				}
				if rep.allowed == 0 || rep.denied == 0 {
					t.Errorf("the race did not run both ways (allowed %d, refused %d): it proves nothing", rep.allowed, rep.denied)
				}
				if p.exited() {
					t.Fatalf("kfv-run ended during the race\nstderr:\n%s", tail(p.stderr.String(), 30))
				}
				stopQEMU(t, p)
				sc := execSyscall(payload)
				var calls, denied, held, shown, unheld, refusedUnheld int
				var holds, stops []time.Duration
				rules := map[string]int{}
				var unheldDetail string
				for _, e := range readEvents(t, events) {
					n, ok := decisions(e)
					if !ok || e.TID != rep.tid || e.Syscall != sc {
						continue
					}
					calls += n
					rules[e.Verdict+" "+e.Rule] += n
					if e.Verdict == "deny" && e.Rule == "no-exec-memory" {
						denied += n
					}
					m := memslotHeldRE.FindStringSubmatch(e.Detail)
					if m != nil {
						held += n
						h, _ := time.ParseDuration(m[2])
						s, _ := time.ParseDuration(m[3])
						holds, stops = append(holds, h), append(stops, s)
					}
					if e.Kind == event.KindDecision && execRaceCall(sc, e.Args) {
						shown++
						// An allowed call must have been held; a refusal
						// needs no hold (one that could not take it, its
						// backing "unheld", is refused by design).
						if m == nil && e.Verdict == "allow" {
							unheld++
							unheldDetail = e.Args + ": " + e.Detail
						}
						if strings.Contains(e.Args, `backing="unheld"`) {
							refusedUnheld++
						}
					}
				}
				t.Logf("the racing thread's %s calls in the events: %d, by verdict and rule %v, %d held (%d of the race's shown one by one, %d of them allowed unheld, %d refused because the hold could not be taken); hold (median, p99): %v, %v; others seen stopped after %v, %v", sc, calls, rules, held, shown, unheld, refusedUnheld, quantile(holds, 0.5), quantile(holds, 0.99), quantile(stops, 0.5), quantile(stops, 0.99))
				// The event stream folds and may shed a flood of
				// decisions (docs/events.md): it must show the refusals
				// and the holds, not each one; a folded line does not
				// say whether its calls were held, a decision line of
				// the race's own calls must.
				if denied == 0 {
					t.Errorf("the implant saw %d refusals, the event stream holds none by no-exec-memory", rep.denied)
				}
				if held == 0 {
					t.Errorf("no %s call of the racing thread says it held QEMU still", sc)
				}
				if shown == 0 {
					t.Errorf("no decision line shows one of the race's own %s calls: the check that each was held proves nothing", sc)
				}
				if unheld != 0 {
					t.Errorf("%d of the race's %s calls were allowed without holding QEMU still, the last: %s", unheld, sc, unheldDetail)
				}
			})
		})
	}
}
