// Package profiles loads, validates and embeds kfv's security profiles.
//
// A profile is TOML. It says, per syscall, what the kernel filter does with it
// (allow, deny with an errno, or inspect: hand it to the supervisor), with
// optional conditions on numeric arguments, and, for inspected calls, the
// verdict rules the supervisor applies (path globs, socket families and
// addresses, thread names). Every problem found while loading is reported as
// FILE:LINE:COL: message, all of them at once, before anything runs.
//
// profiles validates; it does not compile or install filters (seccompnotify
// does) and it does not decide (orch does).
package profiles
