// Package seccompnotify is kfv's kernel boundary for seccomp.
//
// It compiles a profile into a BPF filter (with libseccomp), loads that
// filter in the process that is about to exec QEMU, takes the user
// notification listener from that process with pidfd_getfd, and receives,
// validates and answers notifications. It reads the caller's memory for
// path and socket-address arguments (process_vm_readv) and checks that the
// notification is still valid after every read.
//
// It decides nothing: verdicts come from package orch through the
// supervisor.
//
// Linux only; the filter compiler needs cgo (libseccomp).
package seccompnotify
