//go:build linux

package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/memwatch"
	"kfv/orch"
	"kfv/profiles"
	"kfv/qmp"
	"kfv/seccompnotify"
)

// The plane runs beside the notification loop: it feeds findings to the
// vertical orchestrator, resolves held calls, and carries out the
// reactions the VO orders, through kfv's private QMP monitor or on the
// process. The loop never waits for it : findings go
// through a buffered channel, and a full channel is reported, not waited on.

// planeQueue is how many findings and held calls may wait for the VO.
const planeQueue = 4096

// monitorTimeout bounds the wait for QEMU's private monitor to come up.
const monitorTimeout = 60 * time.Second

// reactionTimeout bounds one QMP command of a reaction.
const reactionTimeout = 30 * time.Second

type planeItem struct {
	findings []orch.Finding
	held     *heldCall
	// vo replaces the VM's vertical orchestrator (a reload); swapped is
	// closed once it is in place.
	vo      *orch.VO
	swapped chan struct{}
}

// heldCall is a notification left unanswered until the VO decides.
type heldCall struct {
	c seccompnotify.Call // a copy: the loop reuses its own
	d orch.Decision
}

// textSetter is implemented by deciders that judge the origin of calls
// (orch.Engine).
type textSetter interface {
	SetText([]orch.AddrRange)
	ResetText()
	JudgesOrigin() bool
}

// ramSealer is the decoder's guest RAM seal.
type ramSealer interface {
	SealGuestRAM(pid int) (blocks int, bytes uint64, err error)
	GuestRAMSealed(pid int) bool
}

type plane struct {
	// monGate holds kfv's commands on the private monitor off while QEMU
	// is being stopped by a signal kfv-run forwards (qmp.Gate says why).
	monGate *qmp.Gate

	// What the plane acts with. It holds no session: the loop hands it
	// findings and held calls, and it answers held calls through the
	// gate, acts on QEMU's process through proc and reports through em.
	cfg      *Config
	em       emitter
	proc     *process
	injected *injected
	gate     *seccompnotify.Gate // set before run starts
	// restoreFrom is a checkpoint this launch restores (-incoming defer).
	restoreFrom *os.File
	// accel is QEMU's accelerator as connect asked it of a held guest
	// ("" when not asked).
	accel string
	// ram seals QEMU's guest RAM (seccompnotify.Decoder.SealGuestRAM)
	// when its guest first runs; nil: nothing to seal.
	ram    ramSealer
	sealMu sync.Mutex

	vo *orch.VO
	in *queue[planeItem]

	dropped atomic.Int64 // findings that could not be queued

	// monConn is kfv's end of the private monitor's socket pair, set
	// before run starts (nil: no monitor); connect hands it to mon.
	monConn *os.File
	monMu   sync.Mutex
	mon     *qmp.Client
	// monReady is closed when connect is over, connected or not: a
	// reaction ordered while QEMU is still starting (a payload at
	// start-up) waits for the monitor instead of failing.
	monReady chan struct{}

	// monGone is closed when kfv's monitor connection ends (its
	// reader's end): reactions then take their outside path at once.
	monGone     chan struct{}
	monGoneOnce sync.Once

	// out is what kfv enforces outside QEMU (outside_linux.go); netCut
	// is the network switch: while set, the loop refuses every network
	// call of the VM that reaches it.
	out    outside
	netCut atomic.Bool

	ckptMu sync.Mutex
	ckpt   *os.File // the latest clean checkpoint, an unnamed file; nil if none

	memMu sync.Mutex
	mem   *memwatch.Watcher // nil until the baseline is taken

	// reactions are carried out by their own goroutine, in order: a
	// reaction's QMP command may wait for QEMU's big lock, held by a
	// thread whose call the plane must answer meanwhile.
	reactions *queue[orch.Reaction]
	reactDone chan struct{}
	// findings counts the findings of medium severity or more seen; a
	// checkpoint taken while it changed is not clean.
	findings atomic.Int64
	ckptBusy atomic.Bool

	stop chan struct{}
	done chan struct{}
}

func newPlane(cfg *Config, em emitter, proc *process, inj *injected) (*plane, error) {
	vo, err := orch.NewVO(cfg.Policy.profile(), nil)
	if err != nil {
		return nil, fmt.Errorf("vertical orchestrator: %w", err)
	}
	return &plane{cfg: cfg, em: em, proc: proc, injected: inj, vo: vo, in: newQueue[planeItem](planeQueue), stop: make(chan struct{}), done: make(chan struct{}),
		monReady: make(chan struct{}), monGone: make(chan struct{}), reactions: newQueue[orch.Reaction](planeQueue), reactDone: make(chan struct{}), monGate: qmp.NewGate()}, nil
}

// observe queues findings for the VO. Called on the notification path
// (seccompnotify.Gate.Observe): it never blocks.
func (p *plane) observe(fs []orch.Finding) {
	if len(fs) == 0 {
		return
	}
	if !p.in.push(planeItem{findings: fs}) {
		n := p.dropped.Add(int64(len(fs)))
		p.em.emit(&event.Event{Kind: event.KindError, Source: "supervisor", Detail: fmt.Sprintf("the vertical orchestrator is behind: %d findings not correlated", n)})
	}
}

// swapVO puts vo in the place of the VM's vertical orchestrator, between
// two findings, and waits until it is.
func (p *plane) swapVO(vo *orch.VO) error {
	done := make(chan struct{})
	for deadline := time.Now().Add(controlTimeout / 2); !p.in.push(planeItem{vo: vo, swapped: done}); {
		if p.in.isClosed() {
			return errors.New("the decision plane has ended")
		}
		if time.Now().After(deadline) {
			return errors.New("the decision plane is too busy to take a new orchestrator")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-done:
		return nil
	case <-p.done:
		return errors.New("the decision plane has ended")
	}
}

// hold hands a held call to the VO; when the queue is full the call is
// answered at once with the decision's fallback.
func (p *plane) hold(c *seccompnotify.Call, d orch.Decision) bool {
	return p.in.push(planeItem{held: &heldCall{c: *c, d: d}})
}

// run is the plane's goroutine. It owns the VO and the monitor.
func (p *plane) run() {
	defer close(p.done)
	// Held calls that the VO allows are performed here: this thread
	// needs file-system attributes of its own, like the loop's.
	if err := seccompnotify.PrepareEmulationThread(currentUmask()); err != nil {
		p.em.emitErr(fmt.Errorf("prepare the plane's thread: %w", err))
	}
	go p.connect()
	go p.reactor()
	var tick <-chan time.Time
	if every := p.cfg.CheckpointEvery; every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-p.in.ready:
			// One item per wake-up, so that a tick or the stop is not
			// kept waiting behind a burst; the token stays while more
			// wait.
			if it, ok := p.in.pop(); ok {
				p.handle(it)
			}
		case <-tick:
			if p.ckptBusy.CompareAndSwap(false, true) {
				// Beside the plane: findings keep flowing while the
				// migration runs, so the checkpoint can tell whether
				// one arrived meanwhile.
				go func() {
					defer p.ckptBusy.Store(false)
					p.checkpoint()
				}()
			}
		case <-p.stop:
			// Answer what is still held: QEMU is going away anyway.
			p.in.close()
			for {
				if it, ok := p.in.pop(); ok {
					p.handle(it)
				} else {
					p.reactions.close()
					<-p.reactDone
					p.stopMemwatch()
					p.closeMonitor()
					return
				}
			}
		}
	}
}

func (p *plane) shutdown() {
	close(p.stop)
	<-p.done
}

func (p *plane) handle(it planeItem) {
	if it.vo != nil {
		p.vo = it.vo
		close(it.swapped)
		return
	}
	if it.held != nil {
		p.resolve(it.held)
		return
	}
	for _, f := range it.findings {
		p.emitFinding(f)
		for _, r := range p.vo.Observe(f) {
			p.order(r)
		}
	}
}

// order hands a reaction to the reactor. Kill and restart ask nothing of
// QEMU (a signal through its pidfd), so they are carried out at once:
// queued, they would wait behind reactions that wait for QEMU's monitor
// (up to monitorTimeout when it is not up yet, reactionTimeout per
// command when QEMU's main loop is busy), and a VM judged to need killing
// would run on meanwhile.
func (p *plane) order(r orch.Reaction) {
	switch r.Kind {
	case profiles.ReactKill, profiles.ReactRestart, profiles.ReactRestartCheckpoint:
		p.react(r)
		return
	}
	if !p.reactions.push(r) {
		p.em.emitErr(fmt.Errorf("reaction %s by rule %s dropped: %d reactions already waiting", r.String(), r.Rule, planeQueue))
	}
}

// reactor carries out reactions one after the other.
func (p *plane) reactor() {
	defer close(p.reactDone)
	for range p.reactions.ready {
		for {
			r, ok := p.reactions.pop()
			if !ok {
				break
			}
			p.react(r)
		}
		if p.reactions.isClosed() {
			return
		}
	}
}

// resolve answers a held call as the VO decides, within the hold's bound.
func (p *plane) resolve(h *heldCall) {
	for _, f := range h.d.Findings {
		p.emitFinding(f)
	}
	act, reactions := p.vo.ResolveAll(h.d.Findings)
	d := h.d
	d.Hold = false
	held := time.Since(h.c.Req.Time)
	if held > h.d.HoldFor && h.d.HoldFor > 0 {
		act = h.d.Action // the bound passed: the fallback stands
	}
	d.Action = act
	if act == profiles.VerdictDeny && d.Errno == 0 {
		d.Errno = int(unix.EACCES)
	}
	d.Reason = strings.TrimPrefix(d.Reason+"; held "+held.Round(time.Millisecond).String(), "; ")
	p.gate.Answer(&h.c, d, false)
	for _, r := range reactions {
		p.order(r)
	}
}

func (p *plane) emitFinding(f orch.Finding) {
	if f.Severity >= profiles.SevMedium {
		p.findings.Add(1)
	}
	p.em.emit(&event.Event{
		Time: f.Time, Kind: event.KindFinding, Source: f.Detector, TID: f.TID,
		Layer: string(f.Layer), HRSC: f.HRSC, Syscall: f.Syscall, Rule: f.Rule,
		Detail: f.Detail, Detector: f.Detector, Severity: f.Severity.String(),
	})
}

// connect dials QEMU's private monitor once QEMU is up, then tells the
// decider where QEMU's code is (for the origin detector).
func (p *plane) connect() {
	ready := sync.OnceFunc(func() { close(p.monReady) })
	defer ready()
	if p.monConn == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-p.stop:
		case <-p.done:
		}
		cancel()
	}()
	conn, err := net.FileConn(p.monConn)
	p.monConn.Close()
	if err != nil {
		p.em.emitErr(fmt.Errorf("kfv's private monitor: %w", err))
		return
	}
	// QEMU greets once its monitor runs, which a QEMU preallocating a
	// large memory may do late; a held guest waits for it. The greeting
	// is awaited as long as QEMU lives: its exit closes its end.
	c, err := qmp.NewClient(ctx, conn.(*net.UnixConn), 0, p.monGate)
	if err != nil {
		// A QEMU that ends at once (it rejects its command line)
		// closes the monitor under the handshake: not an error.
		if ctx.Err() == nil && !p.proc.gone(exitGrace) {
			p.em.emitErr(fmt.Errorf("kfv's private monitor: %w", err))
		}
		return
	}
	p.monMu.Lock()
	p.mon = c
	p.monMu.Unlock()
	ready()
	if p.cfg.HeldStart && p.restoreFrom == nil {
		// What kfv asks QEMU at start-up is asked while the guest is
		// held (withHeldStart), then the guest runs.
		p.accel = queryAccel(ctx, c)
		if err := p.resumeHeld(ctx, c); err != nil {
			if ctx.Err() == nil && !p.proc.gone(exitGrace) {
				p.em.emitErr(fmt.Errorf("start the guest kfv held until its monitor answered: %w; it stays stopped (cont on a monitor of the VM starts it)", err))
			}
		}
	}
	if p.restoreFrom != nil {
		if err := p.restore(ctx, c, p.restoreFrom); err != nil {
			p.em.emitErr(fmt.Errorf("restore checkpoint: %w", err))
		} else {
			p.em.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: "checkpoint restored: the guest resumes where it was saved"})
		}
	}
	events := c.Events()
	// A held guest's RAM was sealed before kfv's cont. Without the hold
	// (a manager's own -S, -incoming) the guest may already run: ask,
	// but never right after kfv's own cont, when a guest that exits at
	// once would meet a QMP command in flight (QEMU 10.0 can hang then,
	// TestGuestExitsAtStartUp).
	if !p.cfg.HeldStart {
		if st, err := c.QueryStatus(ctx); err == nil && st.Status == "running" {
			p.sealGuestRAM("the guest was running when kfv's monitor answered")
		}
	}
	go func() {
		for ev := range events {
			// Events are read so the queue keeps moving; reactions wait
			// for their own answers. The first RESUME is the guest's
			// first run when a manager started it (its own -S).
			if ev.Name == "RESUME" {
				p.sealGuestRAM("the guest started")
			}
		}
		p.monitorEnded() // Events closes when the connection ends
	}()
	if ts, ok := p.cfg.Policy.Decider.(textSetter); ok && ts.JudgesOrigin() {
		// (newSession disarmed it: this QEMU's code is elsewhere.)
		pid, _ := p.proc.current()
		ranges, err := codeRanges(pid)
		if err != nil {
			// A guest that powers off at once takes QEMU away
			// under the read: not an error.
			if !p.proc.gone(exitGrace) {
				p.em.emitErr(fmt.Errorf("origin detector: %w", err))
			}
			return
		}
		ts.SetText(ranges)
		p.em.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: fmt.Sprintf("origin detector armed: %d executable file mappings of QEMU and its libraries", len(ranges))})
	}
	p.startMemwatch(ctx, c)
}

// queryAccel asks QEMU which accelerator runs the guest: "kvm" or "tcg"
// (what memwatch needs to know), "" when QEMU does not say.
func queryAccel(ctx context.Context, c *qmp.Client) string {
	raw, err := c.Execute(ctx, "query-kvm", nil)
	if err != nil {
		return ""
	}
	var k struct{ Enabled bool }
	if json.Unmarshal(raw, &k) != nil {
		return ""
	}
	if k.Enabled {
		return "kvm"
	}
	return "tcg"
}

// resumeHeld starts the guest kfv held with -S, its guest RAM sealed
// first. Only a guest that has never run is started: one that a
// manager's monitor already started, or stopped after it ran, is left as
// it is.
func (p *plane) resumeHeld(ctx context.Context, c *qmp.Client) error {
	st, err := c.QueryStatus(ctx)
	if err != nil {
		return err
	}
	if st.Status != "prelaunch" {
		return nil
	}
	p.sealGuestRAM("before the guest's first instruction")
	_, err = c.Execute(ctx, "cont", nil)
	return err
}

// sealGuestRAM seals the current QEMU's guest RAM, once per process: from
// now on a KVM memory slot over anonymous memory must lie in the RAM
// blocks QEMU made before its guest ran (seccompnotify.SealGuestRAM says
// why). A seal taken after the guest started (a manager's cont, seen
// as its RESUME event, milliseconds later) is said in the event.
func (p *plane) sealGuestRAM(when string) {
	if p.ram == nil {
		return
	}
	p.sealMu.Lock()
	defer p.sealMu.Unlock()
	pid, _ := p.proc.current()
	if pid <= 0 || p.ram.GuestRAMSealed(pid) {
		return
	}
	blocks, n, err := p.ram.SealGuestRAM(pid)
	if err != nil {
		if !p.proc.gone(exitGrace) {
			p.em.emitErr(fmt.Errorf("seal guest RAM: %w; KVM memory slots over anonymous memory are still decided by backing alone", err))
		}
		return
	}
	p.em.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor",
		Detail: fmt.Sprintf("guest RAM sealed %s: %d RAM blocks, %d MiB; a KVM memory slot over other anonymous memory is host memory", when, blocks, n>>20)})
}

// monitor returns kfv's private monitor; with wait it first waits for
// connect to be over (bounded by monitorTimeout, as connect is).
func (p *plane) monitor(wait bool) (*qmp.Client, error) {
	if wait {
		t := time.NewTimer(monitorTimeout)
		select {
		case <-p.monReady:
		case <-p.stop:
		case <-p.done:
		case <-t.C:
		}
		t.Stop()
	}
	p.monMu.Lock()
	defer p.monMu.Unlock()
	if p.lost() {
		return nil, errMonitorGone
	}
	if p.mon == nil {
		return nil, errors.New("kfv's private QMP monitor is not connected")
	}
	return p.mon, nil
}

// errMonitorGone is the error of a QMP command once kfv's monitor
// connection has ended.
var errMonitorGone = errors.New("kfv's monitor is gone")

// lost reports whether kfv's monitor connection has ended.
func (p *plane) lost() bool {
	select {
	case <-p.monGone:
		return true
	default:
		return false
	}
}

// liveMonitor returns kfv's monitor when it is connected and its
// connection has not ended, without waiting; else why not.
func (p *plane) liveMonitor() (*qmp.Client, string) {
	select {
	case <-p.monReady:
	default:
		return nil, "kfv's monitor is not connected yet"
	}
	p.monMu.Lock()
	defer p.monMu.Unlock()
	switch {
	case p.lost():
		return nil, "kfv's monitor is gone"
	case p.mon == nil:
		return nil, "kfv's monitor is not connected"
	}
	return p.mon, ""
}

// gone reports whether a QMP command failed because kfv's monitor
// connection ended (QEMU closed it under the command).
func (p *plane) gone(err error) bool {
	return p.lost() || errors.Is(err, qmp.ErrClosed) || errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET)
}

// monitorEnded is called when kfv's monitor connection ends. QEMU's exit
// and kfv's own shutdown close it; a QEMU that closes it and lives on
// has cut kfv off its monitor, which its own code never does: a finding.
func (p *plane) monitorEnded() {
	p.monGoneOnce.Do(func() { close(p.monGone) })
	select {
	case <-p.stop:
		return
	default:
	}
	if p.proc.gone(exitGrace) {
		return
	}
	select {
	case <-p.stop:
		return
	default:
	}
	p.em.emit(&event.Event{Kind: event.KindWarning, Source: "supervisor", Detail: "QEMU closed kfv's private monitor and runs on: reactions are enforced from outside QEMU only"})
	p.observeFromBeside(orch.Finding{Time: time.Now(), Layer: orch.L3, HRSC: "monitor", Detector: profiles.DetSignature, Severity: profiles.SevHigh, Rule: "kfv:monitor-closed",
		Detail: "QEMU closed kfv's private monitor connection while it runs"})
}

func (p *plane) closeMonitor() {
	p.monMu.Lock()
	defer p.monMu.Unlock()
	if p.mon != nil {
		p.mon.Close()
		p.mon = nil
	}
}

// codeRanges lists QEMU's executable file-backed mappings.
func codeRanges(pid int) ([]orch.AddrRange, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return nil, fmt.Errorf("read QEMU's maps: %w", err)
	}
	maps, err := memwatch.ParseMaps(b)
	if err != nil {
		return nil, err
	}
	var out []orch.AddrRange
	for _, m := range maps {
		if !m.Executable() {
			continue
		}
		if m.Path == "" || (strings.HasPrefix(m.Path, "[") && m.Path != "[vdso]" && m.Path != "[vsyscall]") {
			continue // anonymous code is never QEMU's text
		}
		out = append(out, orch.AddrRange{Start: m.Start, End: m.End, Path: m.Path})
	}
	return out, nil
}

// react carries out one reaction and reports it with its chain.
func (p *plane) react(r orch.Reaction) {
	enforced, by, err := p.do(r)
	e := &event.Event{Kind: event.KindReaction, Source: "vo", Rule: r.Rule, Reaction: r.String(), Outcome: event.OutcomeDone, Enforced: enforced, EnforcedBy: by}
	if err != nil {
		e.Outcome, e.Detail = event.OutcomeFailed, err.Error()
	}
	for _, f := range r.Chain {
		e.Chain = append(e.Chain, event.Link{Time: f.Time, Layer: string(f.Layer), HRSC: f.HRSC, Detector: f.Detector, Severity: f.Severity.String(), Syscall: f.Syscall, TID: f.TID, Rule: f.Rule, Detail: f.Detail})
	}
	if len(r.Chain) > 0 {
		last := r.Chain[len(r.Chain)-1]
		e.Layer, e.HRSC = string(last.Layer), last.HRSC
	}
	if p.cfg.Mode == Audit && err == nil {
		e.Outcome = event.OutcomeAudit
	}
	p.em.emit(e)
}

// do carries out one reaction; it returns how, for those kfv enforces
// outside QEMU (the event's enforced field), and by which path (its
// enforced_by field: event.ByQMPAndOutside, event.ByOutside or
// event.ByQMP; "" in audit mode, which orders nothing).
func (p *plane) do(r orch.Reaction) (how, by string, err error) {
	if p.cfg.Mode == Audit {
		return "", "", nil // audit mode orders nothing, it only reports
	}
	ctx, cancel := context.WithTimeout(context.Background(), reactionTimeout)
	defer cancel()
	var qmpDid bool
	switch r.Kind {
	case profiles.ReactPause:
		how, qmpDid, err = p.pause(ctx)
		return how, byPath(qmpDid), err
	case profiles.ReactContinue:
		how, qmpDid, err = p.resume(ctx)
		return how, byPath(qmpDid), err
	case profiles.ReactLinkDown, profiles.ReactLinkUp:
		how, qmpDid, err = p.link(ctx, r)
		return how, byPath(qmpDid), err
	}
	err = p.doQMPOrKfv(ctx, r)
	if r.Kind == profiles.ReactDeviceDel {
		return "", event.ByQMP, err
	}
	return "", event.ByOutside, err
}

// byPath is the enforced_by of a reaction kfv enforces outside QEMU,
// whose QMP part took effect or not (kfv's monitor gone, or QEMU did
// not answer as asked).
func byPath(qmpDid bool) string {
	if qmpDid {
		return event.ByQMPAndOutside
	}
	return event.ByOutside
}

// doQMPOrKfv carries out the reactions that have no outside part
// (device_del, through QMP) or are kfv's alone (kill, restart, scrub).
func (p *plane) doQMPOrKfv(ctx context.Context, r orch.Reaction) error {
	switch r.Kind {
	case profiles.ReactDeviceDel:
		names := []string{r.Target}
		if r.Target == profiles.AllNICs {
			var err error
			if names, err = p.nics(ctx, r.Target); err != nil {
				return err
			}
		}
		var errs []error
		for _, n := range names {
			errs = append(errs, p.qmp(ctx, "device_del", map[string]any{"id": n}))
		}
		return errors.Join(errs...)
	case profiles.ReactKill:
		return p.proc.kill()
	case profiles.ReactRestart, profiles.ReactRestartCheckpoint:
		return p.proc.requestRestart(p.em, r.Kind == profiles.ReactRestartCheckpoint, p.latestCheckpoint())
	case profiles.ReactScrub:
		return p.out.holdAcross(p.proc, p.scrub)
	}
	return fmt.Errorf("reaction %v is not carried out by the supervisor", r.Kind)
}

// pause stops the guest with QMP's stop when kfv's monitor answers (so
// that QEMU and its managers see the VM paused), then stops QEMU from
// outside, which QEMU cannot undo, and verifies it from outside. With
// kfv's monitor gone or not up yet, the outside stop comes at once.
// qmpDid says whether QEMU answered stop.
func (p *plane) pause(ctx context.Context) (how string, qmpDid bool, err error) {
	var prefix string
	var qerr error
	if c, why := p.liveMonitor(); c != nil {
		qctx, cancel := context.WithTimeout(ctx, pauseQMPBound)
		_, qerr = c.Execute(qctx, "stop", nil)
		cancel()
		switch {
		case qerr == nil:
			prefix = "qmp stop + "
		case p.gone(qerr):
			prefix = "outside only (kfv's monitor is gone): "
		case errors.Is(qerr, context.DeadlineExceeded):
			prefix = "qmp stop unanswered within " + pauseQMPBound.String() + " + "
		default:
			prefix = "qmp stop failed (" + qerr.Error() + ") + "
		}
	} else {
		prefix = "outside only (" + why + "): "
	}
	qmpDid = qerr == nil && prefix == "qmp stop + "
	// The VM is paused only if kfv saw it stopped from outside (err).
	how, err = p.out.freeze(p.proc)
	return prefix + how, qmpDid, err
}

// resume lifts kfv's outside stop first (QEMU's monitor cannot answer
// before), then starts the guest with QMP's cont; the bool says whether
// QEMU answered cont.
func (p *plane) resume(ctx context.Context) (string, bool, error) {
	how, err := p.out.thaw(p.proc)
	if err != nil {
		return how, false, err
	}
	if how == "" {
		how = "nothing held outside"
	}
	c, why := p.liveMonitor()
	if c == nil {
		// QEMU runs again; a guest QEMU itself holds stopped waits for
		// a manager's cont.
		return how + " + no qmp cont (" + why + ")", false, nil
	}
	if _, err := c.Execute(ctx, "cont", nil); err != nil {
		return how + " + qmp cont failed", false, err
	}
	return how + " + qmp cont", true, nil
}

// link carries out link_down and link_up: set_link on the NICs when kfv's
// monitor answers, and kfv's own part outside QEMU. The outside part acts
// on the whole VM (which host socket or tap serves which NIC is QEMU's
// knowledge): link_down of one NIC cuts all of QEMU's network from
// outside. The bool says whether QEMU answered set_link.
func (p *plane) link(ctx context.Context, r orch.Reaction) (string, bool, error) {
	if r.Kind == profiles.ReactLinkUp {
		qmpHow, qmpDid, qerr := p.setLink(ctx, r.Target, true)
		how, err := p.out.restoreNetwork()
		p.netCut.Store(false)
		return qmpHow + " + " + how, qmpDid, errors.Join(qerr, err)
	}
	// kfv's own cut first, the switch before all: nothing new leaves
	// while QEMU is asked, and a QEMU that does not answer cannot delay
	// it.
	p.netCut.Store(true)
	how, err := p.out.cutNetwork(p.proc)
	qmpHow, qmpDid, qerr := p.setLink(ctx, r.Target, false)
	if qerr != nil {
		// Down is enforced by kfv whatever QEMU does with set_link.
		qmpHow += " (" + qerr.Error() + ")"
	}
	return how + " + " + qmpHow, qmpDid, err
}

// setLink runs set_link on the NICs of target when kfv's monitor answers
// and says how it went, and whether QEMU answered it.
func (p *plane) setLink(ctx context.Context, target string, up bool) (string, bool, error) {
	if _, why := p.liveMonitor(); why != "" {
		return "no set_link (" + why + ")", false, nil
	}
	names, err := p.nics(ctx, target)
	if err == nil {
		var errs []error
		for _, n := range names {
			errs = append(errs, p.qmp(ctx, "set_link", map[string]any{"name": n, "up": up}))
		}
		err = errors.Join(errs...)
	}
	if err != nil {
		return "set_link failed", false, err
	}
	return "set_link " + strings.Join(names, ","), true, nil
}

func (p *plane) qmp(ctx context.Context, cmd string, args any) error {
	c, err := p.monitor(true)
	if err != nil {
		return err
	}
	_, err = c.Execute(ctx, cmd, args)
	return err
}

// nics returns the names of the VM's network adapters for target: the
// adapter itself, or every NIC QEMU lists in "info network" for all-nics.
func (p *plane) nics(ctx context.Context, target string) ([]string, error) {
	if target != profiles.AllNICs && target != "" {
		return []string{target}, nil
	}
	c, err := p.monitor(true)
	if err != nil {
		return nil, err
	}
	raw, err := c.Execute(ctx, "human-monitor-command", map[string]string{"command-line": "info network"})
	if err != nil {
		return nil, err
	}
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		return nil, fmt.Errorf("info network: %w", err)
	}
	names := parseNICs(text)
	if len(names) == 0 {
		return nil, errors.New("the VM has no network adapter")
	}
	return names, nil
}

// parseNICs picks the NICs out of HMP "info network": lines such as
// "net0: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:12:34:56".
func parseNICs(text string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimLeft(sc.Text(), " \\_\t")
		name, rest, ok := strings.Cut(line, ": ")
		if !ok || !strings.Contains(rest, "type=nic") {
			continue
		}
		out = append(out, name)
	}
	return out
}

// checkpoint saves a clean checkpoint of the VM through migration to a
// file kfv owns, then lets the VM run on (migration leaves it paused).
func (p *plane) checkpoint() {
	c, err := p.monitor(false)
	if err != nil {
		return // not up yet
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := c.QueryStatus(ctx)
	if err != nil || st.Status != "running" {
		return // only a running VM is a clean checkpoint
	}
	f, err := checkpointFile()
	if err != nil {
		p.em.emitErr(fmt.Errorf("checkpoint: %w", err))
		return
	}
	before := p.findings.Load()
	err = p.migrateTo(ctx, c, f)
	if err == nil && p.findings.Load() != before {
		// A finding arrived while the state was being saved: the saved
		// state may hold the attack. Keep the previous checkpoint.
		err = errors.New("a finding arrived while it was taken: discarded, the previous checkpoint stays")
	}
	if _, cerr := c.Execute(ctx, "cont", nil); cerr != nil && err == nil {
		err = fmt.Errorf("resume after the checkpoint: %w", cerr)
	}
	if err != nil {
		f.Close()
		p.em.emitErr(fmt.Errorf("checkpoint: %w", err))
		return
	}
	p.ckptMu.Lock()
	old := p.ckpt
	p.ckpt = f
	p.ckptMu.Unlock()
	if old != nil {
		old.Close()
	}
	p.em.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: "checkpoint saved"})
}

// checkpointFile makes the file a checkpoint is saved to: unnamed
// (O_TMPFILE) in the temporary directory, so that nothing is left
// whatever ends kfv, and only kfv can reach it. A file system without
// O_TMPFILE gets a named file, removed at once.
func checkpointFile() (*os.File, error) {
	dir := os.TempDir()
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), "kfv-checkpoint"), nil
	}
	f, err := os.CreateTemp(dir, "kfv-checkpoint-")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// reopenCheckpoint opens a checkpoint again for reading from its start:
// QEMU shares the file offset of any copy it is handed.
func reopenCheckpoint(f *os.File) (*os.File, error) {
	return os.Open("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
}

func (p *plane) migrateTo(ctx context.Context, c *qmp.Client, f *os.File) error {
	if err := c.SendFD(ctx, "kfv-checkpoint", f); err != nil {
		return err
	}
	if _, err := c.Execute(ctx, "migrate", map[string]any{"uri": "fd:kfv-checkpoint"}); err != nil {
		return err
	}
	return waitMigration(ctx, c, "query-migrate")
}

// waitMigration polls query-migrate until the migration ends.
func waitMigration(ctx context.Context, c *qmp.Client, cmd string) error {
	for {
		raw, err := c.Execute(ctx, cmd, nil)
		if err != nil {
			return err
		}
		var st struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// latestCheckpoint is the latest clean checkpoint (nil: none); it stays
// the plane's, and Run hands it to the next QEMU's plane.
func (p *plane) latestCheckpoint() *os.File {
	p.ckptMu.Lock()
	defer p.ckptMu.Unlock()
	return p.ckpt
}

// restore feeds a checkpoint to a QEMU started with -incoming defer and
// lets the guest run.
func (p *plane) restore(ctx context.Context, c *qmp.Client, ckpt *os.File) error {
	f, err := reopenCheckpoint(ckpt)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := c.SendFD(ctx, "kfv-checkpoint", f); err != nil {
		return err
	}
	if _, err := c.Execute(ctx, "migrate-incoming", map[string]any{"uri": "fd:kfv-checkpoint"}); err != nil {
		return err
	}
	if err := waitMigration(ctx, c, "query-migrate"); err != nil {
		return err
	}
	st, err := c.QueryStatus(ctx)
	if err != nil {
		return err
	}
	if !st.Running {
		if _, err := c.Execute(ctx, "cont", nil); err != nil {
			return fmt.Errorf("resume: %w", err)
		}
	}
	return nil
}
