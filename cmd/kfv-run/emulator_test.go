package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIsProbe(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want bool
	}{
		{"help", []string{"-help"}, true},
		{"double-dash version", []string{"--version"}, true},
		{"libvirt capability probe", strings.Fields("-S -no-user-config -nodefaults -nographic -machine none,accel=kvm:tcg -qmp unix:/var/lib/libvirt/qemu/capabilities.monitor.sock,server=on,wait=off -pidfile /var/lib/libvirt/qemu/capabilities.pidfile -daemonize"), true},
		{"machine type=none", []string{"-M", "type=none"}, true},
		{"device help", []string{"-machine", "q35", "-device", "help"}, true},
		{"cpu ?", []string{"-cpu", "?"}, true},
		{"a VM", strings.Fields("-name guest=web1,debug-threads=on -machine pc-q35-7.2,usb=off -accel tcg -m 256"), false},
		{"version as a kernel command line", []string{"-kernel", "/vmlinux", "-append", "-version"}, false},
		{"help as a VM name", []string{"-name", "help", "-machine", "q35"}, false},
		{"machine none as a value elsewhere", []string{"-append", "none"}, false},
		{"nothing", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isProbe(tt.args); got != tt.want {
				t.Errorf("isProbe(%q) = %v, want %v", tt.args, got, tt.want)
			}
		})
	}
}

func TestQEMUName(t *testing.T) {
	tests := []struct {
		argv0, want  string
		diverted, ok bool
	}{
		{"/usr/local/bin/kfv-qemu-system-x86_64", "qemu-system-x86_64", false, true},
		{"kfv-qemu-system-x86_64", "qemu-system-x86_64", false, true},
		{"/usr/local/bin/kfv-run", "", false, false},
		{"kfv-run", "", false, false},
		{"/usr/bin/qemu-system-x86_64", "qemu-system-x86_64", true, true},
		{"qemu-system-x86_64", "qemu-system-x86_64", true, true},
		{"/usr/bin/kvm", "kvm", true, true},
	}
	for _, tt := range tests {
		got, diverted, ok := qemuName(tt.argv0)
		if got != tt.want || diverted != tt.diverted || ok != tt.ok {
			t.Errorf("qemuName(%q) = %q, %v, %v; want %q, %v, %v", tt.argv0, got, diverted, ok, tt.want, tt.diverted, tt.ok)
		}
	}
}

// TestFindQEMUSkipsItself: a copy of kfv's own binary (here: the test
// binary, hard-linked under QEMU's name) earlier in PATH is skipped by
// inode, whatever its name; a configured QEMU that is kfv is an error.
func TestFindQEMUSkipsItself(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	first, second := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{first, second} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const name = "qemu-system-x86_64"
	if err := os.Symlink(self, filepath.Join(first, name)); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(second, name)
	if err := os.WriteFile(real, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig()
	got, code, err := findQEMU(cfg, name, false, name, first+":relative:"+second)
	if err != nil || got != real {
		t.Fatalf("findQEMU = %q, %d, %v; want %q", got, code, err, real)
	}
	if _, code, err := findQEMU(cfg, name, false, name, first); err == nil || code != 127 {
		t.Errorf("findQEMU with only kfv in PATH = %d, %v; want 127 and an error", code, err)
	}
	cfg.QEMU = filepath.Join(first, name)
	if _, code, err := findQEMU(cfg, name, false, name, ""); err == nil || code != 125 || !strings.Contains(err.Error(), "kfv itself") {
		t.Errorf("findQEMU with qemu = kfv = %d, %v; want 125 and 'kfv itself'", code, err)
	}
	cfg.QEMU = real
	if got, _, err := findQEMU(cfg, name, false, name, first); err != nil || got != real {
		t.Errorf("findQEMU with qemu = %s: %q, %v", real, got, err)
	}
}

// TestFindQEMUDiverted: kfv in QEMU's place runs the binary put aside
// for it (PATH.distrib), found from the path it was called by or, for a
// bare name, from PATH; without one it looks in PATH as always, skipping
// itself.
func TestFindQEMUDiverted(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const name = "qemu-system-x86_64"
	at := filepath.Join(dir, name)
	if err := os.Symlink(self, at); err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig()
	if _, code, err := findQEMU(cfg, name, true, at, dir); err == nil || code != 127 {
		t.Errorf("nothing put aside, only kfv in PATH: %d, %v; want 127", code, err)
	}
	real := at + ".distrib"
	if err := os.WriteFile(real, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, argv0 := range []string{at, name} {
		if got, _, err := findQEMU(cfg, name, true, argv0, dir); err != nil || got != real {
			t.Errorf("called as %s: %q, %v; want %s", argv0, got, err, real)
		}
	}
	if got, _, err := findQEMU(cfg, name, false, at, dir); err == nil {
		t.Errorf("not diverted: %q, want no QEMU (only kfv in PATH)", got)
	}
}

func TestLookupIn(t *testing.T) {
	get := lookupIn([]string{"PATH=/bin", "KFV_CONFIG=/a", "KFV_CONFIG=/b", "EMPTY="})
	for k, want := range map[string]string{"PATH": "/bin", "KFV_CONFIG": "/a", "EMPTY": "", "MISSING": ""} {
		if got := get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
}
