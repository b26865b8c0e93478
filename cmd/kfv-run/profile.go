package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"kfv/profiles"
	"kfv/profiles/learn"
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
				if p.Extends != "" {
					fmt.Fprintf(c.App.Writer, "%s: ok, an overlay of %s (%d verdict rules with the profile's)\n", c.Args().First(), p.Extends, len(p.Rules))
					return nil
				}
				fmt.Fprintf(c.App.Writer, "%s: ok (%d syscall rules, %d verdict rules)\n", c.Args().First(), len(p.Syscalls), len(p.Rules))
				return nil
			},
		},
		{
			Name:      "learn",
			Usage:     "write the overlay an audit run would have needed (TOML, on stdout): a rule per distinct denied call, with the count seen; dangerous calls are listed as comments, never as rules",
			ArgsUsage: "EVENTS.jsonl...",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "profile", Usage: "the profile the overlay stacks on, a built-in `NAME` or a FILE (default: the one the events name)"},
				&cli.StringFlag{Name: "name", Value: "learned", Usage: "the overlay's `NAME`, which its rules' names start with"},
			},
			Action: func(c *cli.Context) error {
				if c.NArg() == 0 {
					return cli.Exit("usage: kfv-run profile learn [--profile NAME] EVENTS.jsonl...", 2)
				}
				var streams []io.Reader
				for _, name := range c.Args().Slice() {
					f, err := os.Open(name)
					if err != nil {
						return cli.Exit(err.Error(), 1)
					}
					defer f.Close()
					streams = append(streams, f)
				}
				r, err := learn.Read(streams...)
				if err != nil {
					return cli.Exit(err.Error(), 1)
				}
				extends := c.String("profile")
				if extends == "" {
					extends = strings.TrimPrefix(r.Profile, "builtin:")
				}
				if extends == "" {
					return cli.Exit("the events name no profile (no start-up event): say which one the overlay stacks on with --profile", 1)
				}
				if r.Profile != "" && c.String("profile") != "" && strings.TrimPrefix(r.Profile, "builtin:") != extends {
					fmt.Fprintf(os.Stderr, "warning: the run used profile %s, the overlay stacks on %s\n", r.Profile, extends)
				}
				return learn.WriteOverlay(c.App.Writer, r, extends, c.String("name"), c.Args().Slice())
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
