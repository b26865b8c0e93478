// Package policy turns a profile plus a VM's resources into the profile
// kfv enforces for that VM. That is its one job.
//
// The profile (package profiles) says what any QEMU may do; the resource
// set (package resources, from QEMU's command line and, at run time, its
// monitor commands) says what this VM was given. policy adds allow rules
// for the VM's own files, trees, devices, unix sockets and inet
// addresses, placed so that the profile's denials still win, for the
// libraries its environment preloads and the server sockets it was
// handed, and keeps only the profile's rules for the accelerators and
// features the VM uses.
//
// It is pure but for two look-ups at launch, both behind a function the
// tests replace: host names QEMU will connect to are resolved once
// (InetRules takes the resolver), and paths are made canonical
// (ResourceRules takes the canon). It builds on every OS: the flag and
// family values it writes into rules are x86_64 Linux constants of its
// own, not golang.org/x/sys/unix.
package policy
