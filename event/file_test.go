package event

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

// TestOpenFileNotWorldWritable: a new events file is 0640 (under a zero
// umask too); an existing one of kfv's that anyone may write loses o+w,
// and another user's is refused.
func TestOpenFileNotWorldWritable(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	p := filepath.Join(dir, "new.jsonl")
	f, err := OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Errorf("new events file mode %04o, want 0640", st.Mode().Perm())
	}
	w := filepath.Join(dir, "open.jsonl")
	if err := os.WriteFile(w, []byte("{}\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	f, err = OpenFile(w)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, _ := os.Stat(w); st.Mode().Perm() != 0o664 {
		t.Errorf("world-writable events file of kfv's: mode %04o after OpenFile, want 0664", st.Mode().Perm())
	}
	// Another user's: root may change its mode, and does (a user that
	// may not gets the refusal of notWorldWritable).
	other := filepath.Join(dir, "other.jsonl")
	if err := os.WriteFile(other, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("another user's file needs root to make")
	}
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	f, err = OpenFile(other)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, _ := os.Stat(other); st.Mode().Perm() != 0o664 {
		t.Errorf("another user's world-writable events file, as root: mode %04o, want 0664", st.Mode().Perm())
	}
}
