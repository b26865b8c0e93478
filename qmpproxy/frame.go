package qmpproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// QMP is a stream of JSON objects: one per line from well-behaved
// clients, but QEMU's own parser takes them concatenated or separated by
// any whitespace, split across reads anywhere. The framer cuts such a
// stream into frames without decoding it: it tracks strings, escapes and
// nesting depth, so a partial object costs one pass over its new bytes.

// frameKind says what a frame holds.
type frameKind int

const (
	// frameObject is one complete top-level object (not yet validated).
	frameObject frameKind = iota + 1
	// frameSpace is whitespace between objects.
	frameSpace
	// frameGarbage is bytes that are not an object: a top-level value
	// of another kind, an object too large or too deep, or what follows
	// such bytes up to the next newline (where QMP streams resynchronise).
	frameGarbage
)

// maxDepth bounds nesting, as QEMU's parser does (MAX_NESTING 1024).
const maxDepth = 1024

// frame is one unit of the stream.
type frame struct {
	kind frameKind
	// raw is every byte the frame consumed: for an object, the object
	// and (with trailing) the whitespace after it up to a newline.
	raw []byte
	// obj is the object alone (frameObject).
	obj []byte
	// err says why garbage is garbage; nil for the bytes skipped after
	// the first garbage frame of a run.
	err error
}

// framer cuts a byte stream into frames. It is not safe for concurrent use.
type framer struct {
	buf []byte
	// max bounds one object; a longer one is garbage.
	max int
	// trailing makes an object frame take the whitespace after it up to
	// and including a newline, so that what QEMU wrote as one line
	// reaches the client as one write.
	trailing bool

	// skipping is set after garbage: bytes are dropped up to a newline.
	skipping bool

	// Scan state of an object in progress: buf[start:pos] is scanned.
	inObj   bool
	start   int
	pos     int
	depth   int
	inStr   bool
	escaped bool
}

func newFramer(max int, trailing bool) *framer {
	return &framer{max: max, trailing: trailing}
}

// push appends bytes read from the stream.
func (f *framer) push(b []byte) { f.buf = append(f.buf, b...) }

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// next returns the next frame, or false when more bytes are needed.
func (f *framer) next() (frame, bool) {
	if len(f.buf) == 0 {
		return frame{}, false
	}
	if f.skipping {
		i := bytes.IndexByte(f.buf, '\n')
		if i < 0 {
			return f.take(frame{kind: frameGarbage}, len(f.buf)), true
		}
		f.skipping = false
		return f.take(frame{kind: frameGarbage}, i+1), true
	}
	if !f.inObj {
		i := 0
		for i < len(f.buf) && isSpace(f.buf[i]) {
			i++
		}
		if i == len(f.buf) {
			return f.take(frame{kind: frameSpace}, i), true
		}
		if f.buf[i] != '{' {
			if i > 0 {
				return f.take(frame{kind: frameSpace}, i), true
			}
			f.skipping = true
			return f.take(frame{kind: frameGarbage, err: errors.New("QMP input must be a JSON object")}, 1), true
		}
		f.inObj, f.start, f.pos, f.depth, f.inStr, f.escaped = true, i, i, 0, false, false
	}
	end := -1
scan:
	for ; f.pos < len(f.buf); f.pos++ {
		if f.pos-f.start >= f.max {
			// Checked at the same byte however the stream was cut.
			f.inObj, f.skipping = false, true
			return f.take(frame{kind: frameGarbage, err: fmt.Errorf("QMP input larger than %d bytes", f.max)}, f.pos), true
		}
		c := f.buf[f.pos]
		switch {
		case f.inStr:
			switch {
			case f.escaped:
				f.escaped = false
			case c == '\\':
				f.escaped = true
			case c == '"':
				f.inStr = false
			}
		case c == '"':
			f.inStr = true
		case c == '{' || c == '[':
			f.depth++
			if f.depth > maxDepth {
				f.inObj, f.skipping = false, true
				return f.take(frame{kind: frameGarbage, err: fmt.Errorf("JSON nested deeper than %d", maxDepth)}, f.pos+1), true
			}
		case c == '}' || c == ']':
			f.depth--
			if f.depth == 0 {
				end = f.pos + 1
				break scan
			}
		}
	}
	if end < 0 {
		return frame{}, false
	}
	f.inObj = false
	obj := f.buf[f.start:end]
	if f.trailing {
		for end < len(f.buf) && isSpace(f.buf[end]) {
			end++
			if f.buf[end-1] == '\n' {
				break
			}
		}
	}
	return f.take(frame{kind: frameObject, obj: obj}, end), true
}

// take consumes n bytes into fr.raw (and copies obj, which aliases buf).
func (f *framer) take(fr frame, n int) frame {
	fr.raw = append([]byte(nil), f.buf[:n]...)
	if fr.obj != nil {
		fr.obj = append([]byte(nil), fr.obj...)
	}
	f.buf = f.buf[n:]
	if len(f.buf) == 0 {
		f.buf = nil // let a large buffer go
	}
	return fr
}

// request is a decoded QMP command.
type request struct {
	name string
	oob  bool
	id   json.RawMessage
	args json.RawMessage
}

// errDuplicateKey marks an object with a key given twice. Decoders
// disagree on which one wins, so the proxy refuses such input rather
// than check one value and let QEMU use the other.
var errDuplicateKey = errors.New("duplicate key")

// parseRequest validates one object and decodes it as a QMP command.
// Keys are matched exactly, as QEMU does (encoding/json alone would match
// "EXECUTE" too). Members QEMU rejects (unknown keys, a non-string
// command, non-object arguments) are left for QEMU to answer: the command
// is returned with an empty name and no resources, and QEMU refuses it.
func parseRequest(obj []byte) (*request, error) {
	if err := checkJSON(obj); err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, fmt.Errorf("JSON parse error: %w", err)
	}
	r := &request{id: m["id"]}
	ex, hasEx := m["execute"]
	oob, hasOOB := m["exec-oob"]
	switch {
	case hasEx && hasOOB:
		return r, nil
	case hasOOB:
		ex, r.oob = oob, true
	case !hasEx:
		return r, nil
	}
	var name string
	if json.Unmarshal(ex, &name) != nil {
		return r, nil
	}
	r.name = name
	if a, ok := m["arguments"]; ok {
		if t := bytes.TrimLeft(a, " \t\r\n"); len(t) == 0 || t[0] != '{' {
			r.name = "" // QEMU: "QMP input member 'arguments' must be an object"
			return r, nil
		}
		r.args = a
	}
	return r, nil
}

// checkJSON reports whether b is one valid JSON value without duplicate
// keys in any object.
func checkJSON(b []byte) error {
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v)
		return fmt.Errorf("JSON parse error: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	// Each open object has the set of keys seen so far; arrays have nil.
	var stack []map[string]bool
	expectKey := false
	for {
		t, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("JSON parse error: %w", err)
		}
		switch v := t.(type) {
		case json.Delim:
			switch v {
			case '{':
				stack = append(stack, map[string]bool{})
				expectKey = true
				continue
			case '[':
				stack = append(stack, nil)
			case '}', ']':
				stack = stack[:len(stack)-1]
			}
		case string:
			if expectKey {
				top := stack[len(stack)-1]
				if top[v] {
					return fmt.Errorf("%w %q", errDuplicateKey, v)
				}
				top[v] = true
				expectKey = false
				continue
			}
		}
		// After a value inside an object the next token is a key.
		expectKey = len(stack) > 0 && stack[len(stack)-1] != nil
	}
}
