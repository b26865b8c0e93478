package integration

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

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
	qargs := append(guest.RawArgs(img, "tcg"), "-drive", "file="+disk+",if=none,id=d0", "-name", "metrics-vm")
	p := start(t, kfvArgs(filepath.Join(dir, "ev.jsonl"), []string{"--mode", "audit", "--metrics-dir", metricsDir, "--metrics-listen", listen}, qemu, qargs...))
	if !waitFor(20*time.Second, func() bool { return strings.Contains(p.stdout.String(), "tick") }) {
		t.Fatalf("the guest never ran\nstderr:\n%s", p.stderr)
	}
	file := filepath.Join(metricsDir, "kfv-metrics-vm.prom")
	var body string
	if !waitFor(30*time.Second, func() bool {
		body = scrape(exporter)
		return strings.Contains(body, `kfv_notifications_total{applied="allow",syscall="openat",verdict="deny",vm="metrics-vm"}`)
	}) {
		t.Fatalf("node_exporter does not show the VM's denials\n%s", grepLines(body, "kfv_"))
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

	p.cmd.Process.Signal(os.Interrupt)
	p.wait(t, 30*time.Second)
	if _, err := os.Stat(file); err == nil {
		t.Errorf("%s outlived the VM", file)
	}
	if body := scrape(exporter); strings.Contains(body, `vm="metrics-vm"`) {
		t.Errorf("node_exporter still shows the ended VM")
	}
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
