// Package qmpproxy sits on a VM's QMP monitor between its manager
// (libvirt, an operator's script) and QEMU, so that kfv sees every monitor
// command before QEMU does. That is its one job.
//
// kfv admits the files and sockets QEMU's command line names. At run time
// a manager hands QEMU more over QMP (blockdev-add with a filename,
// blockdev-change-medium, drive_add through human-monitor-command,
// netdev_add, chardev-add, migrate to a unix: or file: URI, screendump,
// device_add romfile=…), and QEMU opens them from its main loop, where
// kfv cannot tell a manager's open from a payload's. With the proxy on the
// monitor channel (kfv's layer L3, services to VMs: see docs/profiles.md
// and docs/libvirt.md), each command is parsed, the resources it names
// are derived (resources.FromQMP), and a hook (Config.OnCommand) sees
// them before the command is forwarded: it adds them to the VM's resource
// set, or refuses the command, in which case the manager gets a QMP error
// and QEMU never sees it.
//
// The pieces:
//
//   - Rewrite turns QEMU's arguments into ones where each QMP monitor
//     listening on a unix socket (a path, or a listening socket inherited
//     as fd=N, as libvirt passes it) listens on a private path instead, and
//     lists the Monitors to serve on the manager's side.
//   - Listen opens the manager's side of a Monitor; Proxy.Serve accepts
//     managers there and gives each connection its own connection to
//     QEMU's private socket, forwarding bytes both ways, file descriptors
//     passed with SCM_RIGHTS included, each with the command it came with,
//     and with what resources.FromQMP says the command names.
//
// HMP monitors (mode=readline) are not proxied: see Rewrite.
//
// The proxy runs in the supervisor beside QEMU. It is not on any hot path:
// monitor traffic is a few commands a second at most. It never trusts
// QEMU's side beyond framing: what QEMU sends is passed to the manager
// unchanged, in bounded buffers.
package qmpproxy
