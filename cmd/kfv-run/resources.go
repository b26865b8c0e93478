package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"kfv/resources"
)

var resourcesCommand = &cli.Command{
	Name:      "resources",
	Usage:     "print the files, directories, sockets, devices and fds a QEMU command line uses, without starting anything",
	ArgsUsage: "-- QEMU [ARGS...]",
	Description: "kfv derives a VM's resource set from QEMU's command line: which files QEMU may open and how\n" +
		"(read-only, read-write, create), which sockets it may connect to or bind, which devices it needs,\n" +
		"and whether user-mode networking is in use. qcow2 images are read for their backing chains and\n" +
		"-readconfig files for their sections; relative names resolve against the current directory.\n" +
		"Exit status: 0, or 2 when QEMU would reject the command line.",
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "json", Usage: "print the set as JSON"},
	},
	Action: func(c *cli.Context) error {
		args := c.Args().Slice()
		if len(args) == 0 {
			return cli.Exit("usage: kfv-run resources [--json] -- QEMU [ARGS...]", 2)
		}
		cwd, err := os.Getwd()
		if err != nil {
			return cli.Exit(fmt.Sprintf("current directory: %v", err), 1)
		}
		set, err := resources.FromArgsEnv(args[1:], cwd, os.Environ(), resources.HostFS())
		if err != nil {
			var oe *resources.OptionError
			if errors.As(err, &oe) {
				return cli.Exit("QEMU command line: "+oe.Error(), 2)
			}
			return cli.Exit(err.Error(), 1)
		}
		if c.Bool("json") {
			b, err := set.JSON()
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			_, err = fmt.Fprintf(c.App.Writer, "%s\n", b)
			return err
		}
		_, err = fmt.Fprint(c.App.Writer, set.String())
		return err
	},
}
