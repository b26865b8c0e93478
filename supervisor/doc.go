// Package supervisor runs QEMU under kfv: it compiles the profile, starts
// QEMU through a re-executed loader that installs the filter and execs QEMU,
// takes the notification listener, answers every notified call through an
// orch.Decider, forwards signals, reaps QEMU and reports its exit status,
// and writes the event stream.
//
// Process model (standalone, DESIGN.md section 3a): kfv-run stays QEMU's
// parent; QEMU is started from an OS thread that lives as long as QEMU, with
// PR_SET_PDEATHSIG=SIGKILL, so a killed kfv-run never leaves QEMU running.
//
// Linux only.
package supervisor
