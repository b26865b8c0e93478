package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"kfv/profiles"
)

var profileCommand = &cli.Command{
	Name:  "profile",
	Usage: "check or show profiles",
	Subcommands: []*cli.Command{
		{
			Name:      "check",
			Usage:     "validate a profile file; print every problem as FILE:LINE:COL: message",
			ArgsUsage: "FILE",
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return cli.Exit("usage: kfv-run profile check FILE", 2)
				}
				p, err := profiles.Load(c.Args().First())
				if err != nil {
					var el profiles.ErrorList
					if errors.As(err, &el) {
						return cli.Exit(el.Error(), 1)
					}
					return cli.Exit(err.Error(), 1)
				}
				for _, w := range p.Warnings {
					fmt.Fprintln(os.Stderr, "warning: "+w)
				}
				fmt.Fprintf(c.App.Writer, "%s: ok (%d syscall rules, %d verdict rules)\n", c.Args().First(), len(p.Syscalls), len(p.Rules))
				return nil
			},
		},
		{
			Name:      "show",
			Usage:     "print a built-in profile's TOML, or list the built-in profiles",
			ArgsUsage: "[NAME]",
			Action: func(c *cli.Context) error {
				if c.NArg() == 0 {
					for _, n := range profiles.BuiltinNames() {
						fmt.Fprintln(c.App.Writer, n)
					}
					return nil
				}
				src, err := profiles.BuiltinSource(c.Args().First())
				if err != nil {
					return cli.Exit(err.Error(), 1)
				}
				_, err = c.App.Writer.Write(src)
				return err
			},
		},
	},
}
