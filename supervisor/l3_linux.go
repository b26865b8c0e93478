//go:build linux

package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"kfv/event"
	"kfv/orch"
	"kfv/policy"
	"kfv/profiles"
	"kfv/qmpproxy"
	"kfv/resources"
)

// The L3 hook: kfv sits on the VM's QMP monitors (package qmpproxy). Each
// command a manager sends is seen before QEMU: what it names on the host
// (the disk of a blockdev-add, the medium of a change, the file of a
// screendump) joins the VM's resources, so that QEMU's open of it, moments
// later, is allowed; a command that would run a program (migrate exec:) is
// refused. Every command is logged as an L3 event.

// dynamic holds the resources the VM gained at run time, as verdict rules
// that apply where the profile's own rules matched nothing.
type dynamic struct {
	mu    sync.Mutex // serialises add
	rules []profiles.VerdictRule
	cur   atomic.Pointer[orch.Rules]
}

func (d *dynamic) add(rs []profiles.VerdictRule) error {
	if len(rs) == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	all := append(append([]profiles.VerdictRule(nil), d.rules...), rs...)
	compiled, err := orch.NewRules(&profiles.Profile{Name: "runtime", Source: "qmp", DefaultAction: profiles.ActInspect, DefaultVerdict: profiles.VerdictDeny, Rules: all})
	if err != nil {
		return err
	}
	d.rules = all
	d.cur.Store(compiled)
	return nil
}

// DynamicDecider consults the VM's run-time resources where the profile's
// rules matched nothing: its deny by default becomes an allow for a path
// or socket a manager handed QEMU over the monitor. The profile's own
// denials always stand. The profile's decider can be replaced while QEMU
// runs (Swap: kfv-run reload); the run-time resources stay.
type DynamicDecider struct {
	cur atomic.Pointer[deciderRef]
	// swapMu keeps a run-time raise of a limit from landing on a decider
	// being replaced (it would be lost).
	swapMu sync.Mutex
	dyn    dynamic
}

// deciderRef holds the profile's decider for an atomic swap.
type deciderRef struct{ d orch.Decider }

// NewDynamicDecider wraps the profile's decider d.
func NewDynamicDecider(d orch.Decider) *DynamicDecider {
	dd := &DynamicDecider{}
	dd.cur.Store(&deciderRef{d})
	return dd
}

// Profile returns the profile's decider now in force.
func (d *DynamicDecider) Profile() orch.Decider { return d.cur.Load().d }

// Swap puts next in the place of the profile's decider, after next has
// taken over what the current one counted (orch.Engine.Inherit), and
// returns the one replaced. Calls decided meanwhile see one or the other,
// whole; a limited call the old one admits while next takes over its
// counts is not counted in next (one call, at most, per limited rule).
func (d *DynamicDecider) Swap(next orch.Decider) orch.Decider {
	d.swapMu.Lock()
	defer d.swapMu.Unlock()
	old := d.cur.Load().d
	if ne, ok := next.(*orch.Engine); ok {
		if oe, ok := old.(*orch.Engine); ok {
			ne.Inherit(oe)
		}
	}
	d.cur.Store(&deciderRef{next})
	return old
}

// Decide implements orch.Decider.Decide.
func (d *DynamicDecider) Decide(r *orch.Request) orch.Decision {
	dec := d.cur.Load().d.Decide(r)
	if dec.Action != profiles.VerdictDeny || dec.Rule != "default" {
		return dec
	}
	rs := d.dyn.cur.Load()
	if rs == nil {
		return dec
	}
	if x := rs.Decide(r); x.Action == profiles.VerdictAllow {
		dec.Action, dec.Errno, dec.Rule, dec.Reason = profiles.VerdictAllow, 0, x.Rule, x.Reason
		dec.Findings = nil // the default's finding does not stand either
	}
	return dec
}

// SetText passes the origin detector's code ranges through (orch.Engine).
func (d *DynamicDecider) SetText(rs []orch.AddrRange) {
	if ts, ok := d.Profile().(textSetter); ok {
		ts.SetText(rs)
	}
}

// ResetText passes through (orch.Engine).
func (d *DynamicDecider) ResetText() {
	if ts, ok := d.Profile().(textSetter); ok {
		ts.ResetText()
	}
}

// ResetDaemonize passes through (orch.Engine).
func (d *DynamicDecider) ResetDaemonize() {
	if dr, ok := d.Profile().(daemonizeResetter); ok {
		dr.ResetDaemonize()
	}
}

// RaiseLimit passes a run-time raise of a rule's limit to the profile's
// decider.
func (d *DynamicDecider) RaiseLimit(name string, n int) bool {
	d.swapMu.Lock()
	defer d.swapMu.Unlock()
	lr, ok := d.Profile().(limitRaiser)
	return ok && lr.RaiseLimit(name, n)
}

// limitRaiser is a decider whose rules' limits can be raised at run time.
type limitRaiser interface {
	RaiseLimit(name string, n int) bool
}

// JudgesOrigin implements textSetter.JudgesOrigin.
func (d *DynamicDecider) JudgesOrigin() bool {
	ts, ok := d.Profile().(textSetter)
	return ok && ts.JudgesOrigin()
}

// MonitorProxy is a QMP monitor kfv serves for the VM's manager.
type MonitorProxy struct {
	Monitor  qmpproxy.Monitor
	Listener net.Listener
}

// serveMonitors runs the proxies until the returned function stops them.
// cur is the session of the QEMU running now (a restart makes a new one).
func serveMonitors(cur *atomic.Pointer[session], dyn *DynamicDecider, monitors []MonitorProxy, cwd string) (func(), error) {
	if len(monitors) == 0 {
		return func() {}, nil
	}
	p, err := qmpproxy.New(qmpproxy.Config{
		Cwd: cwd,
		// The host, read as for the command line: a hot-plugged tap's
		// macvtap device (/dev/tapIFINDEX, which QEMU 10.0 tries first)
		// and the backing chains of images a command opens.
		FS: resources.HostFS(),
		OnCommand: func(c *qmpproxy.Command) error {
			return cur.Load().onCommand(dyn, c)
		},
		OnError: func(m *qmpproxy.Monitor, err error) {
			cur.Load().emitErr(fmt.Errorf("monitor proxy %s: %w", m.Option, err))
		},
	})
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	for _, m := range monitors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Serve(m.Listener, m.Monitor); err != nil && !errors.Is(err, qmpproxy.ErrClosed) {
				cur.Load().emitErr(fmt.Errorf("monitor proxy %s: %w", m.Monitor.Option, err))
			}
		}()
	}
	return func() {
		if err := p.Close(); err != nil {
			cur.Load().emitErr(fmt.Errorf("close monitor proxy: %w", err))
		}
		wg.Wait()
	}, nil
}

// onCommand is the L3 agent of the monitor: it admits what a command
// names, refuses a command that would run a program, and logs each one.
func (s *session) onCommand(dyn *DynamicDecider, c *qmpproxy.Command) error {
	if c.Name == "cont" && s.plane != nil {
		// A manager's cont: kfv's outside stop is lifted first, or
		// QEMU, stopped, could not serve it.
		if how, err := s.plane.out.thaw(s.proc); how != "" || err != nil {
			e := &event.Event{Kind: event.KindLifecycle, Source: "qmp", Layer: string(orch.L3), HRSC: "monitor", Detail: "the manager's cont lifts kfv's pause: " + how}
			if err != nil {
				e.Kind, e.Detail = event.KindError, e.Detail+": "+err.Error()
			}
			s.emit(e)
		}
	}
	if dyn == nil {
		return nil // nothing to admit into: QEMU's opens are judged by the profile alone
	}
	e := &event.Event{Kind: event.KindDecision, Source: "qmp", Layer: string(orch.L3), HRSC: "monitor", Syscall: "", Args: "qmp " + c.Name, Verdict: "allow", Applied: "allow", Rule: "qmp:command"}
	defer func() { s.emit(e) }()
	if c.Needs != nil && len(c.Needs.Exec) > 0 {
		e.Verdict, e.Errno, e.Rule = "deny", "EPERM", "qmp:no-exec"
		e.Detail = "the command would run a program: " + strings.Join(c.Needs.Exec, "; ")
		if s.cfg.Mode == Audit {
			e.Applied = "allow"
			return nil
		}
		e.Applied = "deny"
		return fmt.Errorf("kfv: %s would run a program (%s): QEMU runs no programs", c.Name, strings.Join(c.Needs.Exec, "; "))
	}
	if isCPUHotplug(c) {
		// One vCPU more may be made (QEMU refuses beyond maxcpus).
		dyn.RaiseLimit(policy.VCPURuleName, 1)
	}
	if n := memoryBackendSize(c); n > 0 {
		// A hot-plugged memory backend: its RAM block is made after
		// the guest RAM was sealed.
		s.dec.AnnounceGuestRAM(n)
	}
	if c.NeedsErr != nil {
		e.Detail = "resources not understood: " + c.NeedsErr.Error() + "; QEMU judges the command, kfv its opens"
		return nil
	}
	if c.Needs == nil || c.Needs.Set == nil || c.Needs.Empty() {
		return nil
	}
	rules := policy.ResourceRules(c.Needs.Set, "", policy.Canonical)
	// The inet listeners a command makes (migrate-incoming tcp:,
	// chardev-add and netdev_add servers), exactly as on the command line.
	binds, bindWarnings := policy.InetBindRules(c.Needs.Set, policy.LookupHost)
	rules = append(rules, binds...)
	for i := range rules {
		rules[i].Name = "qmp:" + c.Name + ":" + rules[i].Name
		rules[i].Reason = "handed to QEMU by its manager with " + c.Name
	}
	if err := dyn.dyn.add(rules); err != nil {
		e.Verdict, e.Applied, e.Detail = "deny", "deny", "cannot admit what the command names: "+err.Error()
		return fmt.Errorf("kfv: %s: %w", c.Name, err)
	}
	var names []string
	for _, f := range c.Needs.Set.Files {
		names = append(names, f.Access.String()+" "+f.Abs)
	}
	for _, so := range c.Needs.Set.Sockets {
		names = append(names, so.Op+" "+so.Address)
	}
	for _, n := range c.Needs.Set.TapNames {
		names = append(names, "tap "+n)
	}
	e.Rule, e.Detail = "qmp:admit", "admitted: "+strings.Join(names, ", ")
	if len(bindWarnings) > 0 {
		e.Detail += "; " + strings.Join(bindWarnings, "; ")
	}
	return nil
}

// isCPUHotplug says a command plugs a vCPU: device_add of a CPU model.
func isCPUHotplug(c *qmpproxy.Command) bool {
	if c.Name != "device_add" || len(c.Args) == 0 {
		return false
	}
	var a struct {
		Driver string `json:"driver"`
	}
	return json.Unmarshal(c.Args, &a) == nil && resources.IsCPUDevice(a.Driver)
}

// memoryBackendSize is the size of the memory backend an object-add adds
// (memory-backend-ram, -memfd, -file, -shm; QMP's object-add), 0 for any
// other command.
func memoryBackendSize(c *qmpproxy.Command) uint64 {
	if c.Name != "object-add" || len(c.Args) == 0 {
		return 0
	}
	var a struct {
		Type  string          `json:"qom-type"`
		Size  uint64          `json:"size"`
		Props json.RawMessage `json:"props"`
	}
	if json.Unmarshal(c.Args, &a) != nil || !strings.HasPrefix(a.Type, "memory-backend-") {
		return 0
	}
	if a.Size == 0 && len(a.Props) > 0 {
		var p struct {
			Size uint64 `json:"size"`
		}
		if json.Unmarshal(a.Props, &p) == nil {
			a.Size = p.Size
		}
	}
	return a.Size
}

// proxyMonitors rewrites QEMU's arguments so that each QMP monitor the
// manager uses is served by kfv (QEMU listens on a private path in dir
// instead) and opens the manager's side. Inherited listening fds (libvirt's
// fd=N) are taken over: the listener holds a copy, fd N itself is closed,
// and the returned fds are those numbers, which must not reach QEMU. Monitors
// kfv does not proxy (HMP, TCP) come back as warnings.
func proxyMonitors(args []string, dir string) (newArgs []string, monitors []MonitorProxy, hideFDs []int, warnings []string, err error) {
	newArgs, ms, err := qmpproxy.Rewrite(args, dir)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	for _, m := range ms {
		if !m.Proxied() {
			warnings = append(warnings, fmt.Sprintf("monitor %s is not proxied (%s): files handed to QEMU there are not admitted", m.Option, m.Skip))
			continue
		}
		var inherited *os.File
		if m.FD >= 0 {
			inherited = os.NewFile(uintptr(m.FD), fmt.Sprintf("monitor-fd-%d", m.FD))
			hideFDs = append(hideFDs, m.FD)
		}
		ln, err := qmpproxy.Listen(m, inherited)
		if inherited != nil {
			// The listener holds a copy; close the inherited fd now
			// rather than when the garbage collector finalizes the
			// File, at a moment nobody chose.
			inherited.Close()
		}
		if err != nil {
			for _, mp := range monitors {
				mp.Listener.Close()
			}
			return nil, nil, nil, nil, err
		}
		monitors = append(monitors, MonitorProxy{Monitor: m, Listener: ln})
	}
	return newArgs, monitors, hideFDs, warnings, nil
}
