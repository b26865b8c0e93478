//go:build linux

package supervisor

import (
	"strings"

	"kfv/event"
)

// Every event of a VM passes through emitter.emit: the one place to feed
// another output (a metric, a second stream) from.

func (s *session) emit(e *event.Event) { emitter{cfg: s.cfg, proc: s.proc}.emit(e) }

func (s *session) emitErr(err error) { emitter{cfg: s.cfg, proc: s.proc}.emitErr(err) }

// emitter writes events of one VM: its name, mode and QEMU's pid filled in.
type emitter struct {
	cfg  *Config
	proc *process
}

func (em emitter) emit(e *event.Event) {
	em.cfg.Metrics.Event(e)
	if em.cfg.Events == nil {
		return
	}
	e.VM = em.cfg.VM
	e.Mode = string(em.cfg.Mode)
	if e.PID == 0 {
		e.PID, _ = em.proc.current()
	}
	em.cfg.Events.Emit(e)
}

func (em emitter) emitErr(err error) {
	msg := strings.TrimSpace(err.Error())
	em.emit(&event.Event{Kind: event.KindError, Source: "supervisor", Detail: msg})
	if em.cfg.ErrLog != nil {
		em.cfg.ErrLog("VM " + em.cfg.VM + ": " + msg)
	}
}
