package event

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// OpenFile opens path for appending events, creating it with mode 0640
// (close-on-exec, as os opens every file).
// A supervisor killed in the middle of a write leaves its last line torn,
// without its newline; OpenFile ends such a line, so the next event
// starts a line of its own and only the torn line is lost to a consumer.
// An events file anyone may write is one anyone may forge events in:
// OpenFile takes the world's write permission from it, and refuses a
// file whose mode it may not change.
func OpenFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	if err := notWorldWritable(f, path); err != nil {
		f.Close()
		return nil, err
	}
	if err := endTornLine(f, path); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// notWorldWritable takes o+w from the regular file f, which kfv may do
// when the file is its own (or kfv is root), and refuses the file when
// it cannot.
func notWorldWritable(f *os.File, path string) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o002 == 0 {
		return nil
	}
	if err := f.Chmod(st.Mode().Perm() &^ 0o002); err != nil {
		return fmt.Errorf("%s: world-writable (mode %04o) and not kfv's to change (%v): anyone could forge events in it; remove o+w or the file", path, st.Mode().Perm(), err)
	}
	return nil
}

// endTornLine ends a regular file's last line when it has no newline. It
// reads through a descriptor of its own, so that f keeps the access the
// caller asked for (a FIFO, say, is opened write-only and never read).
func endTornLine(f *os.File, path string) error {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
		return err
	}
	r, err := os.Open(path)
	if err != nil {
		// A file kfv may append to but not read (its mode, or another
		// owner): a torn line cannot be seen, and is left as it is
		// rather than refusing the events.
		return nil
	}
	defer r.Close()
	var last [1]byte
	if _, err := r.ReadAt(last[:], st.Size()-1); err != nil && err != io.EOF {
		return err
	}
	if last[0] == '\n' {
		return nil
	}
	_, err = f.Write([]byte{'\n'})
	return err
}

// File is an event file that rotates by size and reopens on demand
// (logrotate's postrotate: SIGHUP to kfv). Past MaxBytes, PATH becomes
// PATH.1, PATH.1 becomes PATH.2 and so on, PATH.Keep is removed, and a new
// PATH is made; rotation happens between two writes, and a write is never
// split, so every line stays whole. Safe for concurrent use.
type File struct {
	path     string
	maxBytes int64 // 0: never rotate
	keep     int   // rotated files kept, at least 1 when rotating

	mu   sync.Mutex
	f    *os.File
	size int64
}

// OpenRotating opens path as OpenFile does, rotating past maxBytes
// (0: never) and keeping keep rotated files.
func OpenRotating(path string, maxBytes int64, keep int) (*File, error) {
	f, err := OpenFile(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if maxBytes > 0 && keep < 1 {
		keep = 1
	}
	return &File{path: path, maxBytes: maxBytes, keep: keep, f: f, size: st.Size()}, nil
}

// Write implements io.Writer.
func (r *File) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.maxBytes > 0 && r.size > 0 && r.size+int64(len(p)) > r.maxBytes {
		if err := r.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := r.f.Write(p)
	r.size += int64(n)
	return n, err
}

func (r *File) rotate() error {
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("rotate %s: %w", r.path, err)
	}
	os.Remove(fmt.Sprintf("%s.%d", r.path, r.keep))
	for i := r.keep - 1; i >= 1; i-- {
		os.Rename(fmt.Sprintf("%s.%d", r.path, i), fmt.Sprintf("%s.%d", r.path, i+1))
	}
	if err := os.Rename(r.path, r.path+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rotate %s: %w", r.path, err)
	}
	return r.open()
}

func (r *File) open() error {
	f, err := OpenFile(r.path)
	if err != nil {
		return fmt.Errorf("reopen events: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	r.f, r.size = f, st.Size()
	return nil
}

// Reopen closes the file and opens its path again: after logrotate moved
// it, events go to the new file.
func (r *File) Reopen() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.f
	if err := r.open(); err != nil {
		return err
	}
	return old.Close()
}

// Close closes the file.
func (r *File) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Close()
}
