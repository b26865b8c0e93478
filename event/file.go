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
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	if err := endTornLine(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

func endTornLine(f *os.File) error {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
		return err
	}
	var last [1]byte
	if _, err := f.ReadAt(last[:], st.Size()-1); err != nil && err != io.EOF {
		return err
	}
	if last[0] == '\n' {
		return nil
	}
	_, err = f.Write([]byte{'\n'})
	return err
}
