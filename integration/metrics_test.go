package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kfv/event"
	"kfv/guest"
)

const nodeExporter = "/usr/bin/prometheus-node-exporter"

// TestMetricsNodeExporter: a supervised VM's metrics reach a real
// node_exporter through its textfile collector: the VM's denials,
// findings and kfv's build, with bounded labels; the file goes with the
// VM. The same metrics answer on --metrics-listen.
func TestMetricsNodeExporter(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	if _, err := os.Stat(nodeExporter); err != nil {
		t.Fatalf("%s: %v (tools/deps.sh installs prometheus-node-exporter)", nodeExporter, err)
	}
	dir := t.TempDir()
	metricsDir := filepath.Join(dir, "metrics")
	exporter := freeAddr(t)
	ne := start(t, []string{nodeExporter, "--web.listen-address=" + exporter, "--collector.disable-defaults", "--collector.textfile", "--collector.textfile.directory=" + metricsDir})
	scrape := func(addr string) string {
		t.Helper()
		var body string
		ok := waitFor(10*time.Second, func() bool {
			resp, err := http.Get("http://" + addr + "/metrics")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
			return resp.StatusCode == 200
		})
		if !ok {
			t.Fatalf("scrape %s failed\nnode_exporter stderr:\n%s", addr, ne.stderr)
		}
		return body
	}

	// A split VMDK image: the built-in profile denies its extent
	// (TestLearnRoundTrip); audit mode lets the VM run.
	disk := splitVMDK(t, dir)
	img := rawGuest(t, guest.RawOptions{Loop: true})
	listen := freeAddr(t)
	sock := filepath.Join(dir, "qmp.sock")
	qargs := append(guest.RawArgs(img, "tcg"), "-drive", "file="+disk+",if=none,id=d0", "-name", "metrics-vm", "-qmp", "unix:"+sock+",server=on,wait=off")
	p := start(t, kfvArgs(filepath.Join(dir, "ev.jsonl"), []string{"--mode", "audit", "--metrics-dir", metricsDir, "--metrics-listen", listen}, qemu, qargs...))
	if !waitFor(20*time.Second, func() bool { return strings.Contains(p.stdout.String(), "tick") }) {
		t.Fatalf("the guest never ran\nstderr:\n%s", p.stderr)
	}
	// A flood of identical denials, enough for the stream to fold some:
	// the manager asks QEMU to open a file that is not the VM's, again
	// and again (it does not exist, so nothing stays open).
	q := dialQMP(t, sock, 20*time.Second)
	for i := 0; i < 1500; i++ {
		q.exec("blockdev-add", map[string]any{"driver": "file", "node-name": fmt.Sprintf("n%d", i), "filename": filepath.Join(dir, "not-the-vms"), "read-only": true})
	}
	file := filepath.Join(metricsDir, "kfv-metrics-vm.prom")
	var body string
	if !waitFor(30*time.Second, func() bool {
		body = scrape(exporter)
		return strings.Contains(body, `kfv_notifications_total{applied="allow",syscall="openat",verdict="deny",vm="metrics-vm"}`)
	}) {
		t.Fatalf("node_exporter does not show the VM's denials\n%s", grepLines(body, "kfv_"))
	}
	// On disk: kfv's own (root here, the libvirt user under libvirt),
	// never writable by others; node_exporter (another user) reads the
	// textfile.
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{filepath.Join(dir, "ev.jsonl"), 0o640}, {file, 0o644}, {metricsDir, 0o755 | os.ModeDir}} {
		st, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Geteuid() {
			t.Errorf("%s is owned by uid %d, want kfv-run's %d", f.path, uid, os.Geteuid())
		}
		if st.Mode() != f.mode {
			t.Errorf("%s has mode %v, want %v", f.path, st.Mode(), f.mode)
		}
	}

	for _, want := range []string{
		`kfv_build_info{goversion="go`,
		`kfv_findings_total{detector="signature",layer="L2",severity="medium",vm="metrics-vm"}`,
		`kfv_decision_seconds_bucket{`,
		`kfv_events_total{result="written",vm="metrics-vm"}`,
		`kfv_performed_calls_total{result="ok",syscall="openat",vm="metrics-vm"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("node_exporter lacks %s", want)
		}
	}
	// Bounded labels: no thread id, path or address ever.
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "kfv_") && regexp.MustCompile(`tid=|path=|addr=|/tmp/`).MatchString(l) {
			t.Errorf("an unbounded label: %s", l)
		}
	}
	if direct := scrape(listen); !strings.Contains(direct, `kfv_notifications_total{applied="allow",syscall="openat",verdict="deny",vm="metrics-vm"}`) {
		t.Errorf("--metrics-listen does not serve the metrics:\n%s", grepLines(direct, "kfv_"))
	}
	t.Logf("kfv's metrics through node_exporter:\n%s", grepLines(body, "kfv_notifications_total"))

	// The values are the event stream's: every decision line counts one
	// notification, a folded line its count; findings alike. The stream
	// and the textfile are written on their own clocks, so the two are
	// compared until they agree (a real mismatch never does).
	evPath := filepath.Join(dir, "ev.jsonl")
	var diff []string
	compared := 0
	if !waitFor(20*time.Second, func() bool {
		want := streamCounts(readEvents(t, evPath), "metrics-vm")
		compared = len(want)
		got := parseExposition(scrape(exporter))
		diff = diff[:0]
		for k, v := range want {
			if got[k] != v {
				diff = append(diff, fmt.Sprintf("%s: stream %v, node_exporter %v", k, v, got[k]))
			}
		}
		for k, v := range got {
			counted := strings.HasPrefix(k, "kfv_notifications_total{") || strings.HasPrefix(k, "kfv_findings_total{") || strings.HasPrefix(k, "kfv_reactions_total{")
			if _, ok := want[k]; counted && !ok && v != 0 {
				diff = append(diff, fmt.Sprintf("%s: node_exporter %v, not in the stream", k, v))
			}
		}
		return len(diff) == 0 && len(want) > 0
	}) {
		t.Errorf("the metrics do not match the event stream (%d series compared):\n%s", compared, strings.Join(diff, "\n"))
	}
	folded := 0
	for _, e := range readEvents(t, evPath) {
		if e.Kind == event.KindFolded {
			folded += e.Count
		}
	}
	t.Logf("%d events folded in the stream", folded)
	if folded == 0 {
		t.Errorf("nothing folded: the comparison did not cover folded lines")
	}

	p.cmd.Process.Signal(os.Interrupt)
	p.wait(t, 30*time.Second)
	if _, err := os.Stat(file); err == nil {
		t.Errorf("%s outlived the VM", file)
	}
	if body := scrape(exporter); strings.Contains(body, `vm="metrics-vm"`) {
		t.Errorf("node_exporter still shows the ended VM")
	}
}

// streamCounts is what the metrics of vm must say after the events evs:
// notifications by applied, syscall and verdict, findings by detector,
// layer and severity, reactions by enforced, kind and outcome, keyed as
// an exposition names them (labels in order).
func streamCounts(evs []event.Event, vm string) map[string]float64 {
	out := map[string]float64{}
	for _, e := range evs {
		n := 1.0
		if e.Kind == event.KindFolded {
			n = float64(e.Count)
		}
		switch {
		case (e.Kind == event.KindDecision || e.Kind == event.KindFolded && e.Detector == "") && e.Source == "seccomp":
			// (Decisions on QMP commands, source qmp, are not notifications.)
			out[fmt.Sprintf("kfv_notifications_total{applied=%q,syscall=%q,verdict=%q,vm=%q}", e.Applied, e.Syscall, e.Verdict, vm)] += n
		case e.Kind == event.KindFinding || e.Kind == event.KindFolded && e.Detector != "":
			out[fmt.Sprintf("kfv_findings_total{detector=%q,layer=%q,severity=%q,vm=%q}", e.Detector, e.Layer, e.Severity, vm)] += n
		case e.Kind == event.KindReaction:
			kind, _, _ := strings.Cut(e.Reaction, ":")
			by := e.EnforcedBy
			if by == "" {
				by = "none"
			}
			out[fmt.Sprintf("kfv_reactions_total{enforced=%q,kind=%q,outcome=%q,vm=%q}", by, kind, e.ReactionOutcome(), vm)] += n
		}
	}
	return out
}

// parseExposition reads the samples of a Prometheus text exposition:
// "name{labels}" to value.
func parseExposition(body string) map[string]float64 {
	out := map[string]float64{}
	for _, l := range strings.Split(body, "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			continue
		}
		out[l[:i]] = v
	}
	return out
}

// grepLines keeps the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
