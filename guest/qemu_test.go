package guest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseQEMUVersion(t *testing.T) {
	for _, tt := range []struct {
		out              string
		major, min, micr int
	}{
		{"QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n", 7, 2, 22},
		{"QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n", 10, 0, 2},
		{"QEMU emulator version 9.1\n", 9, 1, 0},
	} {
		v, err := ParseQEMUVersion([]byte(tt.out))
		if err != nil {
			t.Errorf("%q: %v", tt.out, err)
			continue
		}
		if v.Major != tt.major || v.Minor != tt.min || v.Micro != tt.micr || !strings.HasPrefix(tt.out, v.Line) || strings.Contains(v.Line, "\n") {
			t.Errorf("%q: got %+v", tt.out, v)
		}
	}
	for _, bad := range []string{"", "qemu-img version 7.2.22\n", "QEMU emulator version x.y\n"} {
		if v, err := ParseQEMUVersion([]byte(bad)); err == nil {
			t.Errorf("%q: got %+v, want an error", bad, v)
		}
	}
}

func TestQEMUBinaryFromEnv(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "qemu")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("qemu", link); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(exe)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(QEMUEnv, link)
	if got, err := QEMUBinary(); err != nil || got != real {
		t.Errorf("%s=%s: got %q, %v; want %q", QEMUEnv, link, got, err, real)
	}
	for _, bad := range []string{plain, dir, filepath.Join(dir, "missing")} {
		t.Setenv(QEMUEnv, bad)
		if got, err := QEMUBinary(); err == nil || !strings.Contains(err.Error(), QEMUEnv+"="+bad) {
			t.Errorf("%s=%s: got %q, %v; want an error naming it", QEMUEnv, bad, got, err)
		}
	}
}
