package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The memory-slot race (race-memslot in implant/implant.c): inside real
// QEMU under KVM, a thread keeps rewriting the userspace_addr of a
// struct kvm_userspace_memory_region between a page of guest RAM and a
// page of QEMU's own memory while another thread (the vCPU thread that
// got the trigger, or QEMU's main thread) adds a one-page slot from it
// and deletes it again, memslotAttempts times; after each slot added the
// guest reads the slot's page, and 'F' is QEMU's page seen by the guest.
// kfv cannot perform the call (KVM serves only its VM's own process), so
// it lets it continue; what makes the struct the kernel copies the one kfv
// checked is the hold (supervisor/memhold_linux.go). Bare, every slot is
// made and about half show the forbidden page (the payload works); under
// a check-then-continue supervisor some do (the race is winnable here);
// under kfv none may.

const memslotAttempts = 10000

// memslotForbidden is where the implant maps the forbidden page: QEMU's
// own anonymous memory, no RAM block of the guest's.
const memslotForbidden = "6f0000000000"

type memslotRun struct {
	payload string
	qargs   []string
	env     []string
}

func newMemslotRun(t *testing.T, payload string) *memslotRun {
	t.Helper()
	r := &memslotRun{payload: payload}
	r.qargs = append(rawReactArgs(t, payload, strconv.Itoa(memslotAttempts)), "-name", "kfv-race,debug-threads=on")
	r.env = []string{"LD_PRELOAD=" + buildImplant(t), "KFV_RACE_ALLOWED=guest-ram", "KFV_RACE_FORBIDDEN=" + memslotForbidden}
	return r
}

// wait returns the implant's report of the race in QEMU qemuPID.
func (r *memslotRun) wait(t *testing.T, p *proc, qemuPID int) raceReport {
	t.Helper()
	out := waitRaceReport(t, p, qemuPID, r.payload, memslotAttempts, 5*time.Minute)
	// The caller is the thread the payload says: QEMU's main thread or
	// the vCPU thread.
	if main := r.payload == "race-memslot-main"; main != (out.tid == qemuPID) || !main && !strings.HasPrefix(out.thread, "CPU ") {
		t.Fatalf("%s ran in thread %d %q (QEMU %d)", r.payload, out.tid, out.thread, qemuPID)
	}
	if out.extra["other"] != "0" {
		t.Errorf("%s: %s slots added showed neither page to the guest (last read %s): the guest-side check is broken", r.payload, out.extra["other"], out.extra["lastother"])
	}
	return out
}

func TestRaceMemslot(t *testing.T) {
	qemu := needQEMU(t)
	for _, payload := range []string{"race-memslot", "race-memslot-main"} {
		t.Run(payload, func(t *testing.T) {
			t.Run("bare", func(t *testing.T) {
				r := newMemslotRun(t, payload)
				start := time.Now()
				p := startEnv(t, append([]string{qemu}, r.qargs...), r.env...)
				rep := r.wait(t, p, p.cmd.Process.Pid)
				t.Logf("bare: %+v in %v", rep, time.Since(start).Round(time.Millisecond))
				if rep.denied != 0 || rep.forbidden == 0 || rep.allowed == 0 {
					t.Errorf("bare QEMU: allowed %d, forbidden %d, refused %d of %d: want both pages reached and no refusal, or the payload proves nothing", rep.allowed, rep.forbidden, rep.denied, rep.attempts)
				}
				stopQEMU(t, p)
			})
			t.Run("naive", func(t *testing.T) {
				total := 0
				for run := 1; run <= 3 && total == 0; run++ {
					r := newMemslotRun(t, payload)
					p := naiveStart(t, []string{filepath.Join(t.TempDir(), "none")}, "", append([]string{qemu}, r.qargs...), r.env...)
					rep := r.wait(t, p, p.cmd.Process.Pid)
					total = rep.forbidden
					t.Logf("run %d under a check-then-continue supervisor: %+v; %d slots showed the forbidden page (%.2f%% of the calls)", run, rep, total, 100*float64(total)/float64(rep.attempts))
					stopQEMU(t, p)
				}
				if total == 0 {
					t.Errorf("no slot reached the forbidden page in three runs of %d calls under check-then-continue: the race was not shown", memslotAttempts)
				}
			})
			t.Run("kfv", func(t *testing.T) {
				needKfv(t)
				r := newMemslotRun(t, payload)
				start := time.Now()
				p, qemuPID, events := startRaceKfv(t, payload, qemu, r.qargs, r.env)
				rep := r.wait(t, p, qemuPID)
				t.Logf("under kfv-run: %+v in %v", rep, time.Since(start).Round(time.Millisecond))
				if rep.forbidden != 0 {
					t.Errorf("%d of %d slots showed the forbidden page to the guest under kfv-run", rep.forbidden, rep.attempts)
				}
				if rep.allowed == 0 || rep.denied == 0 {
					t.Errorf("the race did not run both ways (allowed %d, refused %d): it proves nothing", rep.allowed, rep.denied)
				}
				if p.exited() {
					t.Fatalf("kfv-run ended during the race\nstderr:\n%s", tail(p.stderr.String(), 30))
				}
				(&raceVM{}).stop(t, p)
				var denied, held, slots int
				var holds, stops []time.Duration
				for _, e := range readEvents(t, events) {
					n, ok := decisions(e)
					if !ok || e.TID != rep.tid || e.Syscall != "ioctl" {
						continue
					}
					slots += n
					if e.Verdict == "deny" && e.Rule == "no-kvm-memslot-host-memory" {
						denied += n
					}
					if m := memslotHeldRE.FindStringSubmatch(e.Detail); m != nil {
						held += n
						h, _ := time.ParseDuration(m[2])
						s, _ := time.ParseDuration(m[3])
						holds, stops = append(holds, h), append(stops, s)
					}
				}
				t.Logf("the racing thread's slot calls in the events: %d, %d refused, %d held; hold (median, p99): %v, %v; others seen stopped after %v, %v", slots, denied, held, quantile(holds, 0.5), quantile(holds, 0.99), quantile(stops, 0.5), quantile(stops, 0.99))
				// The event stream folds and may shed a flood of
				// decisions (docs/events.md): it must show the refusals
				// and the holds, not each one.
				if denied == 0 {
					t.Errorf("the implant saw %d refusals, the event stream holds none by no-kvm-memslot-host-memory", rep.denied)
				}
				if held == 0 {
					t.Errorf("no slot call of the racing thread says it held QEMU still")
				}
			})
		})
	}
}

// startRaceKfv starts a race's QEMU under kfv-run in enforce mode and
// returns it, QEMU's pid and the event file (kept in $KFV_RACE_EVENTS,
// when set, for a look afterwards).
func startRaceKfv(t *testing.T, payload, qemu string, qargs, env []string) (*proc, int, string) {
	t.Helper()
	events := filepath.Join(t.TempDir(), "events.jsonl")
	if d := os.Getenv("KFV_RACE_EVENTS"); d != "" {
		events = filepath.Join(d, payload+".jsonl")
	}
	// Thousands of refusals: without repeated-denials the ladder does
	// not pause the VM (the race never reported).
	prof := profileWithout(t, t.TempDir(), "repeated-denials")
	p := startEnv(t, kfvArgs(events, []string{"--mode", "enforce", "--profile", prof}, qemu, qargs...), env...)
	return p, childPID(t, p.cmd.Process.Pid), events
}

var memslotHeldRE = regexp.MustCompile(`other (\d+) threads held still \(cgroup freezer\) for (\S+), seen stopped after (\S+),`)

// quantile is the q quantile of ds (0 for none).
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// stopQEMU ends a QEMU started without kfv-run (bare or under the naive
// supervisor).
func stopQEMU(t *testing.T, p *proc) {
	t.Helper()
	(&raceVM{}).stop(t, p)
}
