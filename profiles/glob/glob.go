// Package glob matches kfv's path and name patterns.
//
// A pattern is split at "/" into elements. Within an element, "*" matches
// any run of characters, "?" one character, "[abc]", "[a-z]" and "[!a-z]"
// one character of a class, and "\x" the character x. An element that is
// exactly "**" matches zero or more whole elements, so "/usr/share/qemu/**"
// matches everything under that directory (and the directory itself), and
// "/a/**/b" matches "/a/b" and "/a/x/y/b". "*" never matches "/".
//
// The same patterns match thread names ("CPU */KVM") and abstract socket
// names ("@qemu-*"). Matching allocates nothing and takes time proportional
// to the pattern length times the subject length at worst.
package glob

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Glob is a compiled pattern. The zero value matches nothing; use Compile.
type Glob struct {
	pattern string
	literal bool // no wildcards: compare with the pattern
	elems   []elem
}

type elem struct {
	any     bool // "**"
	literal string
	toks    []tok // nil when literal
}

type tokKind uint8

const (
	tokLit tokKind = iota
	tokOne
	tokStar
	tokClass
)

type tok struct {
	kind   tokKind
	lit    string      // tokLit
	ranges []runeRange // tokClass
	negate bool        // tokClass
}

type runeRange struct{ lo, hi rune }

// Compile parses a pattern. Errors say what is wrong and where, as an
// offset into the pattern.
func Compile(pattern string) (*Glob, error) {
	if !utf8.ValidString(pattern) {
		return nil, fmt.Errorf("pattern %q is not valid UTF-8", pattern)
	}
	g := &Glob{pattern: pattern}
	if !strings.ContainsAny(pattern, `*?[\`) {
		g.literal = true
		return g, nil
	}
	off := 0
	for _, part := range strings.Split(pattern, "/") {
		e, err := compileElem(part, off)
		if err != nil {
			return nil, fmt.Errorf("pattern %q: %w", pattern, err)
		}
		g.elems = append(g.elems, e)
		off += len(part) + 1
	}
	return g, nil
}

// MustCompile is Compile for patterns written in Go source; it panics on a
// bad pattern. Do not use it on input.
func MustCompile(pattern string) *Glob {
	g, err := Compile(pattern)
	if err != nil {
		panic(err)
	}
	return g
}

// String returns the pattern.
func (g *Glob) String() string { return g.pattern }

func compileElem(s string, off int) (elem, error) {
	if s == "**" {
		return elem{any: true}, nil
	}
	if strings.Contains(s, "**") {
		return elem{}, fmt.Errorf(`at offset %d: "**" must be a whole path element, as in "/a/**/b"`, off+strings.Index(s, "**"))
	}
	if !strings.ContainsAny(s, `*?[\`) {
		return elem{literal: s}, nil
	}
	var toks []tok
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			toks = append(toks, tok{kind: tokLit, lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch c {
		case '*':
			flush()
			toks = append(toks, tok{kind: tokStar})
			i++
		case '?':
			flush()
			toks = append(toks, tok{kind: tokOne})
			i++
		case '\\':
			if i+1 >= len(s) {
				return elem{}, fmt.Errorf("at offset %d: trailing backslash", off+i)
			}
			r, n := utf8.DecodeRuneInString(s[i+1:])
			lit.WriteRune(r)
			i += 1 + n
		case '[':
			flush()
			t, n, err := compileClass(s[i:])
			if err != nil {
				return elem{}, fmt.Errorf("at offset %d: %w", off+i, err)
			}
			toks = append(toks, t)
			i += n
		default:
			lit.WriteByte(c)
			i++
		}
	}
	flush()
	return elem{toks: toks}, nil
}

// compileClass parses "[...]" at the start of s and returns its length.
func compileClass(s string) (tok, int, error) {
	t := tok{kind: tokClass}
	i := 1
	if i < len(s) && (s[i] == '!' || s[i] == '^') {
		t.negate = true
		i++
	}
	first := true
	for {
		if i >= len(s) {
			return tok{}, 0, fmt.Errorf(`unterminated "["`)
		}
		if s[i] == ']' && !first {
			i++
			break
		}
		first = false
		lo, n, err := classRune(s[i:])
		if err != nil {
			return tok{}, 0, err
		}
		i += n
		hi := lo
		if i+1 < len(s) && s[i] == '-' && s[i+1] != ']' {
			hi, n, err = classRune(s[i+1:])
			if err != nil {
				return tok{}, 0, err
			}
			i += 1 + n
			if hi < lo {
				return tok{}, 0, fmt.Errorf("bad range %q-%q", lo, hi)
			}
		}
		t.ranges = append(t.ranges, runeRange{lo, hi})
	}
	return t, i, nil
}

func classRune(s string) (rune, int, error) {
	if s[0] == '\\' {
		if len(s) < 2 {
			return 0, 0, fmt.Errorf(`unterminated "["`)
		}
		r, n := utf8.DecodeRuneInString(s[1:])
		return r, 1 + n, nil
	}
	if s[0] == '/' {
		return 0, 0, fmt.Errorf(`"/" inside "[...]"`)
	}
	r, n := utf8.DecodeRuneInString(s)
	return r, n, nil
}

// Match reports whether s matches the whole pattern.
func (g *Glob) Match(s string) bool {
	if g == nil {
		return false
	}
	if g.literal {
		return s == g.pattern
	}
	// Elements are matched like characters in a classic wildcard match,
	// with "**" as the only star: on a mismatch, the last "**" swallows one
	// more element and matching resumes after it. One kind of star makes
	// the single backtracking point enough.
	pi, si := 0, 0 // si > len(s): every element of s consumed
	starPi, starSi := -1, 0
	for {
		if pi < len(g.elems) && g.elems[pi].any {
			starPi, starSi = pi, si
			pi++
			continue
		}
		if si <= len(s) {
			end := elemEnd(s, si)
			if pi < len(g.elems) && g.elems[pi].match(s[si:end]) {
				pi++
				si = end + 1
				continue
			}
		} else if pi == len(g.elems) {
			return true
		}
		if starPi < 0 || starSi > len(s) {
			return false
		}
		starSi = elemEnd(s, starSi) + 1
		pi, si = starPi+1, starSi
	}
}

func elemEnd(s string, from int) int {
	if i := strings.IndexByte(s[from:], '/'); i >= 0 {
		return from + i
	}
	return len(s)
}

func (e *elem) match(s string) bool {
	if e.toks == nil {
		return s == e.literal
	}
	ti, ci := 0, 0
	starTi, starCi := -1, 0
	for ti < len(e.toks) || ci < len(s) {
		if ti < len(e.toks) {
			t := &e.toks[ti]
			switch t.kind {
			case tokStar:
				starTi, starCi = ti, ci
				ti++
				continue
			case tokLit:
				if strings.HasPrefix(s[ci:], t.lit) {
					ti++
					ci += len(t.lit)
					continue
				}
			case tokOne:
				if ci < len(s) {
					_, n := utf8.DecodeRuneInString(s[ci:])
					ti++
					ci += n
					continue
				}
			case tokClass:
				if ci < len(s) {
					r, n := utf8.DecodeRuneInString(s[ci:])
					if t.inClass(r) {
						ti++
						ci += n
						continue
					}
				}
			}
		}
		if starTi < 0 || starCi >= len(s) {
			return false
		}
		_, n := utf8.DecodeRuneInString(s[starCi:])
		starCi += n
		ti, ci = starTi+1, starCi
	}
	return true
}

func (t *tok) inClass(r rune) bool {
	in := false
	for _, rg := range t.ranges {
		if rg.lo <= r && r <= rg.hi {
			in = true
			break
		}
	}
	return in != t.negate
}
