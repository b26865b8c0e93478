// Package orch decides. It takes a decoded request (one notified syscall,
// already attributed to a thread and with its pointer arguments read) and
// returns a Decision: allow, deny with an errno, or hold, with the rule
// that decided, the layer and hypervisor resource the call belongs to,
// and what the detectors found.
//
// The KungFuVisor decision plane, all from the profile:
//
//   - Attributor: the agent of a call, its hypervisor resource (hRSC) and
//     layer ([[hrsc]], [[interface]]).
//   - Detectors, run by the agent on each call: signature (the
//     [[syscall]] and [[rule]] tables; Rules alone is this detector),
//     origin (the call's instruction pointer outside QEMU's text,
//     Engine.SetText), behaviour and rate ([[detector]]).
//   - Horizontal orchestrators, one per layer ([[ho]]): the verdict for
//     the call at hand, from memory only (Engine.Decide).
//   - The vertical orchestrator (VO): correlates findings across layers
//     and over time ([[correlate]]) and orders reactions; it runs beside
//     the notification loop, never in it.
//
// orch imports no unix and holds no fds, so plain `go test` covers it.
package orch
