// Package integration holds kfv's end-to-end tests: real qemu-system-x86_64,
// real seccomp, guests built by the project itself (package guest), and
// kfv-run as operators run it.
//
// `make integration` runs them with KFV_RUN pointing at a built kfv-run and
// KFV_GUESTS at the guest cache; run directly with `go test`, they build
// what they need themselves. A test that cannot run here skips with one
// line saying why and how to fix it.
package integration
