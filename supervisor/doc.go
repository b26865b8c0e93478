// Package supervisor runs QEMU under kfv. Its jobs, one file group each:
//
//   - launch (launch_linux.go, run_linux.go, emulator_linux.go,
//     loader_linux.go): make a command line ready for kfv (Launch), derive
//     its Policy, start QEMU under the filter in either process model, take
//     the listener, forward signals, reap QEMU, report its exit status,
//     relaunch it when a restart is ordered;
//   - the notification loop (loop_linux.go): receive, decode, decide, and
//     hand each decision to seccompnotify.Gate, which answers the kernel;
//     every answer becomes one decision event;
//   - the reaction plane (plane_linux.go, memwatch_linux.go,
//     react_linux.go): beside the loop, feeds findings to the vertical
//     orchestrator, resolves held calls through the same gate, and carries
//     out reactions through kfv's private monitor or on the process;
//   - the L3 hook (l3_linux.go): kfv's place on the manager's monitors.
//
// Standalone, kfv-run stays QEMU's parent; QEMU is started from an OS
// thread that lives as long as QEMU, with PR_SET_PDEATHSIG=SIGKILL, so a
// killed kfv-run never leaves QEMU running. As a libvirt emulator, QEMU
// keeps the caller's pid and a detached supervisor follows it (see
// emulator_linux.go and docs/libvirt.md).
//
// Linux only.
package supervisor
