package event

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRotate: past its size the file moves to .1 (and .1 to .2...), only
// keep rotated files stay, and every line is whole in one of them.
func TestRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm.jsonl")
	f, err := OpenRotating(path, 1000, 2)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("x", 99) + "\n")
	for range 50 {
		if _, err := f.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + ".1", path + ".2"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if len(b) > 1000 || len(b) == 0 || len(b)%100 != 0 {
			t.Errorf("%s: %d bytes: want whole lines, at most 1000", p, len(b))
		}
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Errorf("%s.3 kept: want 2 rotated files", path)
	}
}

// TestReopen: after the file was moved away (logrotate), Reopen makes
// events go to a new file at the path.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vm.jsonl")
	f, err := OpenRotating(path, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintln(f, "one")
	if err := os.Rename(path, path+".old"); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "two") // still the moved file
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "three")
	old, _ := os.ReadFile(path + ".old")
	cur, _ := os.ReadFile(path)
	if !bytes.Equal(old, []byte("one\ntwo\n")) || !bytes.Equal(cur, []byte("three\n")) {
		t.Errorf("moved file %q, new file %q", old, cur)
	}
}
