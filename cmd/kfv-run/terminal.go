package main

import (
	"bytes"
	"encoding/json"
	"io"
	"sync"

	"golang.org/x/sys/unix"

	"kfv/event"
)

// At a terminal, kfv-run's stderr is shared with QEMU's own messages
// and read by a person: JSON lines there would bury QEMU's error for a
// missing image. When the events go to stderr and stderr is a terminal,
// they are rendered as kfv-run events does, one line per denial,
// finding, reaction, warning and error; allowed calls and lifecycle
// steps are left out (--events FILE keeps them all, as JSON).

// isTerminal reports whether fd is a terminal.
func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// terminalEvents renders the JSON lines written to it on w.
type terminalEvents struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

func (t *terminalEvents) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	for {
		i := bytes.IndexByte(t.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := t.buf[:i]
		t.buf = t.buf[i+1:]
		var e event.Event
		if err := json.Unmarshal(line, &e); err != nil {
			// Not an event: show it as it came.
			if _, err := t.w.Write(append(line, '\n')); err != nil {
				return len(p), err
			}
			continue
		}
		if !shownAtTerminal(&e) {
			continue
		}
		var b bytes.Buffer
		renderEvent(&b, "kfv-run: ", &e)
		if _, err := t.w.Write(b.Bytes()); err != nil {
			return len(p), err
		}
	}
}

// shownAtTerminal says which events a person at the terminal sees.
func shownAtTerminal(e *event.Event) bool {
	switch e.Kind {
	case event.KindDecision, event.KindFolded:
		return e.Verdict == "deny"
	case event.KindFinding, event.KindReaction, event.KindWarning, event.KindError:
		return true
	}
	return false
}
