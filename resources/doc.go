// Package resources derives a VM's resource set from what QEMU is told:
// which files QEMU may open and how (read-only, read-write, create), which
// directory trees it may use, which sockets it may connect to or bind,
// which devices it needs, which inherited fds it is told about, and
// whether user-mode networking (slirp, which connects wherever the guest
// connects) is in use. FromArgs reads QEMU's command line; FromQMP and
// FromHMP read one monitor command, which names resources the same way
// (blockdev-add is -blockdev, netdev_add is -netdev…), and Set.Merge adds
// what a command names to the VM's set.
//
// That is its one job. It is pure: it starts nothing, holds no fds and
// reads files (qcow2 headers for backing chains, -readconfig files) only
// through an fs.FS rooted at "/", so tests fake the host with
// testing/fstest.MapFS. Package policy turns a Set into the rules about
// emulated opens and socket calls; the profile adds what every QEMU needs
// (its data files, its own /proc entries).
//
// The parser follows QEMU 7.2's option syntax: "-opt value" (never
// "-opt=value"), "--opt" as "-opt", "key=value,key=value" with ",," for a
// literal comma, an implied key for a bare first value (-chardev socket,…,
// -netdev tap,…), and JSON for -blockdev, -device, -object and -netdev
// when the value starts with "{". Options it does not understand but that
// may name a resource are reported in Set.Warnings, never dropped.
package resources
