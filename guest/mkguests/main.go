// Command mkguests builds kfv's test guests and prints their paths, one
// a line:
//
//	go run ./guest/mkguests -out .cache/guests [-raw] [-linux]
//
// With neither -raw nor -linux it builds both. The Linux guest needs
// apt-get and dpkg-deb (Debian); see package kfv/guest.
package main

import (
	"flag"
	"fmt"
	"os"

	"kfv/guest"
)

func main() {
	out := flag.String("out", ".cache/guests", "cache `dir` for the guests")
	raw := flag.Bool("raw", false, "build the raw-code guests")
	linux := flag.Bool("linux", false, "build the Linux guest")
	exitCode := flag.Uint("exit-code", 42, "isa-debug-exit `value` of the raw hello guest (0-127)")
	tools := flag.Bool("tools", false, "also install QEMU when missing (root)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "mkguests: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if !*raw && !*linux {
		*raw, *linux = true, true
	}
	if err := run(*out, *raw, *linux, *exitCode, *tools); err != nil {
		fmt.Fprintf(os.Stderr, "mkguests: %v\n", err)
		os.Exit(1)
	}
}

func run(out string, raw, linux bool, exitCode uint, tools bool) error {
	if tools {
		if err := guest.EnsureTools("qemu-system-x86_64", "qemu-img"); err != nil {
			return err
		}
	}
	if exitCode > 127 {
		return fmt.Errorf("-exit-code %d: must be at most 127", exitCode)
	}
	if raw {
		for _, o := range []guest.RawOptions{
			{ExitCode: uint8(exitCode)},
			{Loop: true},
		} {
			p, err := guest.BuildRaw(out, o)
			if err != nil {
				return fmt.Errorf("build raw guest: %w", err)
			}
			fmt.Println(p)
		}
	}
	if linux {
		l, err := guest.BuildLinux(out)
		if err != nil {
			return fmt.Errorf("build linux guest: %w", err)
		}
		fmt.Println(l.Kernel)
		fmt.Println(l.Initrd)
	}
	return nil
}
