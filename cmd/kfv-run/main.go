// Command kfv-run runs QEMU under kfv's supervision.
//
//	kfv-run [--profile NAME|FILE] [--mode enforce|audit] [--events FILE|-] [--vm NAME] -- QEMU [ARGS...]
//
// Invoked as kfv-qemu-system-x86_64 (a link to kfv-run), or in QEMU's own
// place (make install-divert), it is a QEMU binary for libvirt's
// <emulator> and any caller of QEMU by path: no kfv flags, settings from
// /etc/kfv/kfv.toml (emulator.go, docs/libvirt.md).
//
// main only wires: each subcommand is one cli.Command in its own file.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"kfv/supervisor"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	switch {
	case supervisor.IsLoader():
		supervisor.LoaderMain() // never returns
	case supervisor.IsEmulatorSupervisor():
		os.Exit(emulatorSupervisorMain())
	case supervisor.IsEmulatorStage():
		os.Exit(emulatorStageMain())
	}
	if name, diverted, ok := qemuName(os.Args[0]); ok {
		os.Exit(emulatorMain(name, diverted))
	}
	app := &cli.App{
		Name:      "kfv-run",
		Usage:     "run QEMU under a self-defending seccomp supervisor",
		UsageText: "kfv-run [flags] -- QEMU [ARGS...]\nkfv-run profile check FILE\nkfv-run profile show [NAME]\nkfv-run events FILE\nkfv-run resources [--json] -- QEMU [ARGS...]\nkfv-run version",
		Description: "kfv-run starts QEMU under a seccomp filter compiled from a profile. Calls the profile\n" +
			"allows run in the kernel; the rest reach kfv-run, which decides, answers and logs each one\n" +
			"as a JSON line. QEMU keeps its arguments, environment, stdio and inherited fds; kfv-run\n" +
			"returns QEMU's exit status (128+N if it died of signal N; 125 if kfv failed before QEMU\n" +
			"started, 126 if QEMU is not executable, 127 if it is not found). With -daemonize it returns\n" +
			"as QEMU's first process does (0 once the daemon is ready) while a detached kfv-run goes on\n" +
			"supervising the daemon (docs/daemonize.md).",
		Version:         version,
		HideVersion:     true,
		Flags:           runFlags,
		Action:          runAction,
		Commands:        []*cli.Command{profileCommand, eventsCommand, resourcesCommand, statusCommand, reloadCommand, versionCommand},
		HideHelpCommand: true,
		// Errors are printed once, by main, with the exit code they carry.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	if err := app.Run(os.Args); err != nil {
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(os.Stderr, "kfv-run: "+msg)
		}
		if ec, ok := err.(cli.ExitCoder); ok && ec.ExitCode() != 0 {
			os.Exit(ec.ExitCode())
		}
		os.Exit(125)
	}
}
