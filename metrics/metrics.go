// Package metrics is kfv's Prometheus metrics: one set per supervised VM,
// counted with the atomic counters of client_golang off the notification
// path's slow parts, and exposed without a port per VM: a node_exporter
// textfile-collector file per VM, written atomically, and optionally an
// HTTP listener.
//
// Labels stay bounded: syscall and errno names, verdicts and answers,
// layers, detectors, severities, reaction kinds and outcomes; never a
// thread id, a path or an address. The VM's name is a constant label.
package metrics

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"kfv/event"
)

// VM is the metrics of one supervised VM.
type VM struct {
	name string
	reg  *prometheus.Registry

	notifications *prometheus.CounterVec
	performed     *prometheus.CounterVec
	findings      *prometheus.CounterVec
	reactions     *prometheus.CounterVec
	latency       prometheus.Histogram
	scans         prometheus.Counter
	scanSeconds   prometheus.Histogram
	tampers       prometheus.Counter

	changed atomic.Uint64 // bumped by every observation

	mu      sync.Mutex
	written uint64 // changed when the textfile was last written
	file    string
	srv     *http.Server
	stop    chan struct{}
	done    chan struct{}
}

// New makes the metrics of the VM named vm, for kfv version.
func New(vm, version string) *VM {
	m := &VM{name: vm, reg: prometheus.NewRegistry()}
	cl := prometheus.Labels{"vm": vm}
	m.notifications = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kfv_notifications_total", Help: "Calls the kernel filter sent to kfv, by syscall, verdict and the answer kfv applied.", ConstLabels: cl}, []string{"syscall", "verdict", "applied"})
	m.performed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kfv_performed_calls_total", Help: "Calls kfv performed for QEMU (opens, connects...), by syscall and result (ok, or the errno name).", ConstLabels: cl}, []string{"syscall", "result"})
	m.findings = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kfv_findings_total", Help: "Findings of kfv's detectors, by layer, detector and severity.", ConstLabels: cl}, []string{"layer", "detector", "severity"})
	m.reactions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kfv_reactions_total", Help: "Reactions the vertical orchestrator ordered, by kind, outcome and the path that enforced them (qmp+outside, outside: kfv alone without QEMU's cooperation, qmp, none in audit mode).", ConstLabels: cl}, []string{"kind", "outcome", "enforced"})
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kfv_decision_seconds", Help: "Time from reading a notification to answering it.", ConstLabels: cl,
		Buckets: []float64{5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3, 25e-3, 100e-3, 1}})
	m.scans = prometheus.NewCounter(prometheus.CounterOpts{Name: "kfv_memwatch_scans_total", Help: "memwatch scans of QEMU's memory.", ConstLabels: cl})
	m.scanSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kfv_memwatch_scan_seconds", Help: "Duration of a memwatch scan.", ConstLabels: cl,
		Buckets: []float64{100e-6, 500e-6, 1e-3, 5e-3, 10e-3, 50e-3, 100e-3, 500e-3}})
	m.tampers = prometheus.NewCounter(prometheus.CounterOpts{Name: "kfv_memwatch_tampers_total", Help: "Tampered pages memwatch found.", ConstLabels: cl})
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kfv_build_info", Help: "kfv's version; always 1.", ConstLabels: cl}, []string{"version", "goversion"})
	info.WithLabelValues(version, runtime.Version()).Set(1)
	m.reg.MustRegister(m.notifications, m.performed, m.findings, m.reactions, m.latency, m.scans, m.scanSeconds, m.tampers, info)
	return m
}

// Registry is the VM's registry (for tests and for callers that expose
// it themselves).
func (m *VM) Registry() *prometheus.Registry { return m.reg }

// Decision counts one answered notification, and the call kfv performed
// for it when it did (performed: the errno name, "ok", or "" for none).
func (m *VM) Decision(syscall, verdict, applied, performed string, took time.Duration) {
	if m == nil {
		return
	}
	m.notifications.WithLabelValues(syscall, verdict, applied).Inc()
	if performed != "" {
		m.performed.WithLabelValues(syscall, performed).Inc()
	}
	m.latency.Observe(took.Seconds())
	m.changed.Add(1)
}

// Event counts what the VM's stream says beyond decisions: findings and
// reactions.
func (m *VM) Event(e *event.Event) {
	if m == nil {
		return
	}
	switch e.Kind {
	case event.KindFinding:
		m.findings.WithLabelValues(e.Layer, e.Detector, e.Severity).Inc()
	case event.KindReaction:
		kind, _, _ := strings.Cut(e.Reaction, ":")
		by := e.EnforcedBy
		if by == "" {
			by = "none"
		}
		m.reactions.WithLabelValues(kind, e.ReactionOutcome(), by).Inc()
	default:
		return
	}
	m.changed.Add(1)
}

// Scan counts one memwatch scan and the tampered pages it found.
func (m *VM) Scan(took time.Duration, tampers int) {
	if m == nil {
		return
	}
	m.scans.Inc()
	m.scanSeconds.Observe(took.Seconds())
	if tampers > 0 {
		m.tampers.Add(float64(tampers))
	}
	m.changed.Add(1)
}

// Stream counts the VM's event stream from its writer's totals: events
// written in full, folded into summary lines, and lost to write errors.
func (m *VM) Stream(written, folded, lost func() int64) {
	if m == nil {
		return
	}
	for result, f := range map[string]func() int64{"written": written, "folded": folded, "lost": lost} {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kfv_events_total", Help: "Events of the VM's stream: written in full, folded into a summary line, or lost to a write error.",
			ConstLabels: prometheus.Labels{"vm": m.name, "result": result},
		}, func() float64 { return float64(f()) }))
	}
}

// TextfileName is the file of VM vm in a textfile-collector directory.
func TextfileName(dir, vm string) string {
	safe := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, vm)
	return filepath.Join(dir, "kfv-"+safe+".prom")
}

// Start writes the VM's textfile in dir ("" for none) every period while
// something changed, and serves the metrics on listen ("" for none).
// Stop ends both and removes the file.
func (m *VM) Start(dir string, period time.Duration, listen string) error {
	if m == nil {
		return nil
	}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		m.file = TextfileName(dir, m.name)
		if err := m.write(); err != nil {
			m.file = ""
			return err
		}
	}
	if listen != "" {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			if m.file != "" {
				os.Remove(m.file)
				m.file = ""
			}
			return fmt.Errorf("metrics: listen on %s: %w", listen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
		m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go m.srv.Serve(ln)
	}
	m.stop, m.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(m.done)
		if m.file == "" {
			<-m.stop
			return
		}
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				if m.changed.Load() != m.written {
					m.write()
				}
			}
		}
	}()
	return nil
}

// write writes the textfile atomically: node_exporter never reads half
// of one.
func (m *VM) write() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.written = m.changed.Load()
	if err := prometheus.WriteToTextfile(m.file, m.reg); err != nil {
		return fmt.Errorf("metrics: write %s: %w", m.file, err)
	}
	return nil
}

// Stop ends the writer and the listener and removes the VM's textfile:
// a VM that is gone has no metrics.
func (m *VM) Stop() error {
	if m == nil || m.stop == nil {
		return nil
	}
	close(m.stop)
	<-m.done
	var errs []error
	if m.srv != nil {
		errs = append(errs, m.srv.Close())
	}
	if m.file != "" {
		if err := os.Remove(m.file); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
