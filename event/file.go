package event

import (
	"fmt"
	"io"
	"os"
)

// OpenFile opens path for appending events, creating it with mode 0640
// (close-on-exec, as os opens every file).
// A supervisor killed in the middle of a write leaves its last line torn,
// without its newline; OpenFile ends such a line, so the next event
// starts a line of its own and only the torn line is lost to a consumer.
func OpenFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	if err := endTornLine(f, path); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
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
