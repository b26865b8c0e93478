package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
