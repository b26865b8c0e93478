package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kfv/event"
)

// floodCalls is how many denied opens the flood makes.
const floodCalls = 200000

// TestEventFlood: QEMU's threads (the implant, from a device thread and
// from the main loop) make 200,000 calls the profile denies as fast as
// they can, in audit mode so that the flood runs to its end. The event
// stream stays valid JSON lines under 20 MiB, every distinct decision is
// there, the folded counts add up to the calls made, and no reaction is
// missing.
func TestEventFlood(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	if testing.Short() {
		t.Skip("a flood: skipped with -short")
	}
	for _, w := range []string{"device", "main"} {
		a := attack{
			name:  "deny-flood",
			main:  w == "main",
			audit: true,
			setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
				return fmt.Sprint(floodCalls), func() (int, int, string) {
					want := fmt.Sprintf("opens=%d ok=%d", floodCalls, floodCalls)
					return one(strings.Contains(r.report.Detail, want), r.report.Detail)
				}
			},
			check: func(t *testing.T, r *attackRun, evs []event.Event) {
				path := filepath.Join(r.dir, "events.jsonl")
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%d bytes of events for %d denied opens", fi.Size(), floodCalls)
				if fi.Size() > 20<<20 {
					t.Errorf("the event file is %d bytes: want at most 20 MiB", fi.Size())
				}
				// Every line is one event, whole.
				f, err := os.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				sc := bufio.NewScanner(f)
				sc.Buffer(make([]byte, 1<<20), 1<<20)
				for n := 1; sc.Scan(); n++ {
					if !json.Valid(sc.Bytes()) {
						t.Fatalf("line %d is not JSON: %.200s", n, sc.Text())
					}
				}
				var full, folded, findings, foldedFindings, reactions int
				kinds := map[string]bool{}
				for _, e := range evs {
					shadow := e.Syscall == "openat" && e.Verdict == "deny"
					switch {
					case e.Kind == event.KindDecision && shadow && strings.Contains(e.Args, `"/etc/shadow"`):
						full++
						kinds[e.HRSC+"/"+e.Rule] = true
					case e.Kind == event.KindFolded && shadow && e.Detector == "":
						folded += e.Count
						if !kinds[e.HRSC+"/"+e.Rule] {
							t.Errorf("a folded decision (%s/%s) with no full line before it", e.HRSC, e.Rule)
						}
					case e.Kind == event.KindFinding && e.Syscall == "openat":
						findings++
					case e.Kind == event.KindFolded && e.Detector != "" && e.Syscall == "openat":
						foldedFindings += e.Count
					case e.Kind == event.KindReaction:
						reactions++
					}
				}
				t.Logf("decisions: %d in full, %d folded; findings: %d in full, %d folded; %d reactions", full, folded, findings, foldedFindings, reactions)
				if full+folded != floodCalls {
					t.Errorf("%d denied opens in the stream (%d in full, %d folded), want %d", full+folded, full, folded, floodCalls)
				}
				if findings+foldedFindings < floodCalls {
					t.Errorf("%d findings for %d denials: some are missing", findings+foldedFindings, floodCalls)
				}
				if reactions == 0 {
					t.Errorf("no reaction to the flood: the ladder's reactions are never folded")
				}
			},
		}
		t.Run(w, func(t *testing.T) { runAttack(t, qemu, a, true) })
	}
}

// TestFloodHeld: the flood of TestEventFlood in enforce mode, with the
// built-in profile, from a device thread and from the main loop. The
// ladder's repeated-denials pause stops QEMU from outside: every thread
// of QEMU is seen stopped, uses no CPU while held, and the flood never
// runs to its end; the time from the first denial to the pause, and
// kfv-run's CPU while it holds the flood, are logged (make bench's
// containment section measures them against their targets). SIGTERM
// then ends the held VM.
func TestFloodHeld(t *testing.T) {
	reactShort(t)
	for _, v := range []struct {
		name string
		main bool
	}{{"device", false}, {"main", true}} {
		t.Run(v.name, func(t *testing.T) {
			payload, env := "deny-flood", []string(nil)
			if v.main {
				payload, env = "main-deny-flood", []string{"KFV_IMPLANT_MAIN=1"}
			}
			dir := t.TempDir()
			r := startReactEnv(t, dir, []string{"--profile", "qemu"}, rawReactArgs(t, payload, fmt.Sprint(floodCalls)), env...)
			e := r.waitReaction("pause", reactTimeout, func(l event.Link) bool { return l.Syscall == "openat" })
			if e.EnforcedBy == "" {
				t.Errorf("the pause has no enforced_by")
			}
			r.wantStopped()
			var first time.Time
			for _, d := range r.eventsNow() {
				if d.Kind == event.KindDecision && d.Syscall == "openat" && d.Verdict == "deny" {
					first = d.Time
					break
				}
			}
			if first.IsZero() {
				t.Fatalf("no denied open in the stream")
			}
			t.Logf("first denial to the pause: %v", e.Time.Sub(first))

			// Held: QEMU's threads use no CPU, and the flood stops short.
			kfvPID := r.p.cmd.Process.Pid
			q0, k0 := cpuTicks(t, r.qemuPID), cpuTicks(t, kfvPID)
			w0 := time.Now()
			time.Sleep(2 * time.Second)
			q1, k1 := cpuTicks(t, r.qemuPID), cpuTicks(t, kfvPID)
			secs := time.Since(w0).Seconds()
			t.Logf("while held, over %.1f s: QEMU %d ticks, kfv-run %d ticks (%.1f%% of one core)", secs, q1-q0, k1-k0, float64(k1-k0)/clockTicks/secs*100)
			if q1 != q0 {
				t.Errorf("QEMU used %d ticks of CPU while held, want none", q1-q0)
			}
			r.wantStopped()
			denied := 0
			for _, d := range r.eventsNow() {
				switch {
				case d.Kind == event.KindDecision && d.Syscall == "openat" && d.Verdict == "deny":
					denied++
				case d.Kind == event.KindFolded && d.Detector == "" && d.Syscall == "openat" && d.Verdict == "deny":
					denied += d.Count
				}
			}
			t.Logf("%d of the flood's %d opens denied before it was held", denied, floodCalls)
			if denied == 0 || denied >= floodCalls {
				t.Errorf("%d opens denied: want the flood held before its end", denied)
			}
			if rep := parseImplant(r.p.stderr.String(), payload); rep.Result == "ok" {
				t.Errorf("the flood ran to its end: %s", rep.Detail)
			}
			r.p.cmd.Process.Signal(syscall.SIGTERM)
			r.p.wait(t, 30*time.Second)
			r.took()
		})
	}
}

// clockTicks is USER_HZ, the unit of /proc's CPU times.
const clockTicks = 100

// cpuTicks is the user and system CPU time of process pid, all its
// threads, in clock ticks.
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatalf("CPU of %d: %v", pid, err)
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+2:]))
	// Fields from state (3): utime is field 14, stime 15.
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("CPU of %d: stat %q", pid, b)
	}
	return u + s
}
