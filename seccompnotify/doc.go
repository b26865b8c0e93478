// Package seccompnotify is kfv's kernel boundary for seccomp, and the only
// code that acts on the kernel for QEMU's calls.
//
// It compiles a profile into a BPF filter (with libseccomp), loads that
// filter in the process that is about to exec QEMU, takes the user
// notification listener from that process with pidfd_getfd, and receives,
// decodes and answers notifications. It reads the caller's memory for
// path, socket-address and message arguments (process_vm_readv, where
// package sysent says they are) and checks that the notification is still
// valid after every read.
//
// Gate answers a decided call: it applies the mode, and a call sysent
// marks performed is carried out by its performer (perform_*_linux.go)
// on what was checked (an fd installed with ADDFD, a send on a copy of
// the socket), never continued.
//
// It decides nothing: verdicts come from package orch through the
// supervisor.
//
// Linux only; the filter compiler needs cgo (libseccomp).
package seccompnotify
