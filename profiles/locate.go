package profiles

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// BurntSushi/toml v1.6.0 knows where each key is (its parser's keyInfo)
// but does not export it, and keys inside arrays of tables ([[syscall]])
// share one entry there. So positions come from a second, small scanner
// over the source, run after toml has accepted the syntax. It records
// where each key and each value starts, under a path such as
// "syscall[2].args[0].op" or "rule[1].paths[3]".

// span is where a key and its value start.
type span struct {
	key, val Pos
}

type locator struct {
	file  string
	src   string
	i     int
	line  int
	lineS int // offset of the current line's first byte

	spans map[string]span
	aot   map[string]int // array-of-tables path -> number of tables so far
}

func locate(file, src string) *locator {
	l := &locator{file: file, src: src, line: 1, spans: map[string]span{}, aot: map[string]int{}}
	l.scan()
	return l
}

// key returns where the key at path starts, or the closest enclosing
// thing that has a position, or the start of the file.
func (l *locator) key(path string) Pos {
	for p := path; ; p = parent(p) {
		if s, ok := l.spans[p]; ok && s.key.Line > 0 {
			return s.key
		}
		if s, ok := l.spans[p]; ok && s.val.Line > 0 {
			return s.val
		}
		if p == "" {
			return Pos{File: l.file, Line: 1, Col: 1}
		}
	}
}

// val returns where the value at path starts, falling back to its key.
func (l *locator) val(path string) Pos {
	if s, ok := l.spans[path]; ok && s.val.Line > 0 {
		return s.val
	}
	return l.key(path)
}

// parent strips the last element ("a.b[2]" -> "a.b", "a.b" -> "a").
func parent(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

func join(p, k string) string {
	if p == "" {
		return k
	}
	return p + "." + k
}

func index(p string, i int) string { return p + "[" + strconv.Itoa(i) + "]" }

func (l *locator) pos() Pos {
	end := min(l.i, len(l.src))
	return Pos{File: l.file, Line: l.line, Col: utf8.RuneCountInString(l.src[l.lineS:end]) + 1}
}

func (l *locator) eof() bool { return l.i >= len(l.src) }

func (l *locator) peek() byte {
	if l.eof() {
		return 0
	}
	return l.src[l.i]
}

func (l *locator) advance() {
	if l.eof() {
		return
	}
	if l.src[l.i] == '\n' {
		l.line++
		l.lineS = l.i + 1
	}
	l.i++
}

// skip passes spaces, tabs and comments, and newlines too if nl.
func (l *locator) skip(nl bool) {
	for !l.eof() {
		switch c := l.peek(); {
		case c == ' ' || c == '\t' || c == '\r':
			l.advance()
		case c == '\n' && nl:
			l.advance()
		case c == '#':
			for !l.eof() && l.peek() != '\n' {
				l.advance()
			}
		default:
			return
		}
	}
}

func (l *locator) scan() {
	table := ""
	for {
		l.skip(true)
		if l.eof() {
			return
		}
		start := l.i
		if l.peek() == '[' {
			table = l.header()
		} else {
			l.keyValue(table)
		}
		if l.i == start { // never loop on input the grammar above misses
			l.advance()
		}
	}
}

// header reads "[a.b]" or "[[a.b]]" and returns the table's path.
func (l *locator) header() string {
	at := l.pos()
	l.advance()
	array := l.peek() == '['
	if array {
		l.advance()
	}
	l.skip(false)
	keys := l.keys()
	for !l.eof() && l.peek() != '\n' && l.peek() != ']' {
		l.advance()
	}
	for l.peek() == ']' {
		l.advance()
	}
	// Resolve each prefix through the arrays of tables seen so far: in
	// [[syscall.args]], "syscall" is the last [[syscall]].
	path := ""
	for i, k := range keys {
		path = join(path, k)
		last := i == len(keys)-1
		if n, ok := l.aot[path]; ok && !(last && array) {
			path = index(path, n-1)
		}
	}
	if array {
		n := l.aot[path]
		l.aot[path] = n + 1
		l.record(path, at, Pos{})
		path = index(path, n)
	}
	l.record(path, at, Pos{})
	return path
}

func (l *locator) record(path string, key, val Pos) {
	s := l.spans[path]
	if key.Line > 0 {
		s.key = key
	}
	if val.Line > 0 {
		s.val = val
	}
	l.spans[path] = s
}

// keys reads a dotted key.
func (l *locator) keys() []string {
	var out []string
	for {
		l.skip(false)
		switch c := l.peek(); {
		case c == '"' || c == '\'':
			out = append(out, l.quotedKey(c))
		case isBare(c):
			s := l.i
			for !l.eof() && isBare(l.peek()) {
				l.advance()
			}
			out = append(out, l.src[s:l.i])
		default:
			return out
		}
		l.skip(false)
		if l.peek() != '.' {
			return out
		}
		l.advance()
	}
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func (l *locator) quotedKey(q byte) string {
	s := l.i
	l.quoted(q)
	raw := l.src[s:min(l.i, len(l.src))]
	if q == '\'' {
		return strings.Trim(raw, "'")
	}
	if u, err := strconv.Unquote(raw); err == nil {
		return u
	}
	return strings.Trim(raw, `"`)
}

// keyValue reads "a.b = value" in table.
func (l *locator) keyValue(table string) {
	at := l.pos()
	keys := l.keys()
	if len(keys) == 0 {
		return
	}
	path := table
	for _, k := range keys {
		path = join(path, k)
		l.record(path, at, Pos{})
	}
	l.skip(false)
	if l.peek() != '=' {
		return
	}
	l.advance()
	l.skip(false)
	l.value(path)
}

// value reads one value and records where it starts under path.
func (l *locator) value(path string) {
	l.record(path, Pos{}, l.pos())
	switch c := l.peek(); c {
	case '[':
		l.items(']', func(n int) { l.value(index(path, n)) })
	case '{':
		l.items('}', func(int) { l.keyValue(path) })
	case '"', '\'':
		l.str(c)
	default:
		for !l.eof() && !strings.ContainsRune(",]}#\n", rune(l.peek())) {
			l.advance()
		}
	}
}

// items reads an array or an inline table, from its opening bracket to
// end: item reads the n-th element, then a comma may follow.
func (l *locator) items(end byte, item func(n int)) {
	l.advance()
	for n := 0; ; n++ {
		l.skip(true)
		if l.eof() || l.peek() == end {
			break
		}
		start := l.i
		item(n)
		l.skip(true)
		if l.peek() == ',' {
			l.advance()
		} else if l.i == start {
			break
		}
	}
	l.advance()
}

func (l *locator) str(q byte) {
	if strings.HasPrefix(l.src[l.i:], strings.Repeat(string(q), 3)) {
		l.i += 3
		end := strings.Index(l.src[l.i:], strings.Repeat(string(q), 3))
		for end > 0 && q == '"' && escaped(l.src, l.i+end) {
			next := strings.Index(l.src[l.i+end+1:], `"""`)
			if next < 0 {
				end = -1
				break
			}
			end += 1 + next
		}
		stop := len(l.src)
		if end >= 0 {
			stop = l.i + end + 3
			for stop < len(l.src) && l.src[stop] == q { // up to two quotes may end the content
				stop++
			}
		}
		for l.i < stop {
			l.advance()
		}
		return
	}
	l.quoted(q)
}

// quoted reads a one-line string quoted with q, its quotes included:
// a basic string (backslash escapes) for a double quote, a literal
// string for a single one.
func (l *locator) quoted(q byte) {
	l.advance()
	for !l.eof() && l.peek() != q && l.peek() != '\n' {
		if q == '"' && l.peek() == '\\' {
			l.advance()
		}
		l.advance()
	}
	l.advance()
}

// escaped reports whether the byte at i is preceded by an odd number of
// backslashes.
func escaped(s string, i int) bool {
	n := 0
	for j := i - 1; j >= 0 && s[j] == '\\'; j-- {
		n++
	}
	return n%2 == 1
}
