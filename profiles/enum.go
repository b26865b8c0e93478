package profiles

import (
	"fmt"
	"reflect"
	"strings"
)

// enum names the values of an enumeration that runs from 1 up, as
// profiles and events spell them: names[v] is the name of v (names[0],
// the zero value, means "unset" and has none). String, parsing and the
// lists in error messages all read this one table, so a value is named
// in one place.
type enum[E ~int] struct {
	what  string // what a value is, for error messages: "severity"
	names []string
}

// name returns v's name, or TYPE(N) for a value the table does not name.
func (e *enum[E]) name(v E) string {
	if v > 0 && int(v) < len(e.names) && e.names[v] != "" {
		return e.names[v]
	}
	return fmt.Sprintf("%s(%d)", reflect.TypeFor[E]().Name(), int(v))
}

// lookup returns the value named s.
func (e *enum[E]) lookup(s string) (E, bool) {
	for v, n := range e.names {
		if v > 0 && n == s {
			return E(v), true
		}
	}
	return 0, false
}

// parse returns the value named s, or an error that lists the names.
func (e *enum[E]) parse(s string) (E, error) {
	if v, ok := e.lookup(s); ok {
		return v, nil
	}
	return 0, fmt.Errorf("unknown %s %q (want %s)", e.what, s, orList(e.list()))
}

// list returns the names, in the order of the values.
func (e *enum[E]) list() []string { return e.names[1:] }

// orList writes names as a choice: "a", "a or b", "a, b or c".
func orList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
