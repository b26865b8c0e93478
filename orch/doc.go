// Package orch decides. It takes a decoded request (one notified syscall,
// already attributed to a thread and with its pointer arguments read) and
// returns a Decision: allow, or deny with an errno, with the rule that
// decided and the layer and hypervisor resource the call belongs to.
//
// orch imports no unix and holds no fds, so plain `go test` covers it.
package orch
