package event

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends e as one JSON object (no newline) to b. It writes
// the same object encoding/json would, field for field, without
// reflection: the notification loop encodes one event per call.
func (e *Event) AppendJSON(b []byte) []byte {
	b = append(b, `{"time":`...)
	b = appendTime(b, e.Time)
	b = appendField(b, "kind", e.Kind)
	b = appendField(b, "vm", e.VM)
	b = appendField(b, "mode", e.Mode)
	b = append(b, `,"pid":`...)
	b = strconv.AppendInt(b, int64(e.PID), 10)
	b = append(b, `,"tid":`...)
	b = strconv.AppendInt(b, int64(e.TID), 10)
	b = appendField(b, "thread", e.Thread)
	b = appendField(b, "layer", e.Layer)
	b = appendField(b, "hrsc", e.HRSC)
	b = appendField(b, "syscall", e.Syscall)
	b = appendField(b, "source", e.Source)
	b = appendField(b, "args", e.Args)
	b = appendField(b, "verdict", e.Verdict)
	b = appendField(b, "errno", e.Errno)
	b = appendField(b, "applied", e.Applied)
	b = appendField(b, "rule", e.Rule)
	b = appendField(b, "detail", e.Detail)
	b = appendField(b, "detector", e.Detector)
	b = appendField(b, "severity", e.Severity)
	b = appendField(b, "reaction", e.Reaction)
	b = appendField(b, "outcome", e.Outcome)
	b = appendField(b, "enforced", e.Enforced)
	b = appendField(b, "enforced_by", e.EnforcedBy)
	b = append(b, `,"chain":[`...)
	for i := range e.Chain {
		if i > 0 {
			b = append(b, ',')
		}
		l := &e.Chain[i]
		b = append(b, `{"time":`...)
		b = appendTime(b, l.Time)
		b = appendField(b, "layer", l.Layer)
		b = appendField(b, "hrsc", l.HRSC)
		b = appendField(b, "detector", l.Detector)
		b = appendField(b, "severity", l.Severity)
		b = appendField(b, "syscall", l.Syscall)
		b = append(b, `,"tid":`...)
		b = strconv.AppendInt(b, int64(l.TID), 10)
		b = appendField(b, "rule", l.Rule)
		b = appendField(b, "detail", l.Detail)
		b = append(b, '}')
	}
	b = append(b, `],"count":`...)
	b = strconv.AppendInt(b, int64(e.Count), 10)
	b = appendField(b, "first", e.First)
	b = appendField(b, "last", e.Last)
	return append(b, '}')
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

func appendField(b []byte, key, v string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return appendString(b, v)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string: quotes, backslashes and control
// characters escaped, invalid UTF-8 replaced by U+FFFD, as encoding/json
// does (which also escapes <, > and &; both forms are the same JSON).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
