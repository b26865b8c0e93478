package profiles

import "errors"

// Resource names (hRSCs: "vcpu0", "main-loop", "iothread:io0",
// "thread:CPU x/KVM") are matched with name patterns: "*" matches any
// run of characters, "/" included, "?" one byte, "\x" the character x.
// Unlike path globs they have no "**" and no classes: a resource name is
// one word, not a path.

// CheckNamePattern reports a name pattern that cannot match as written.
func CheckNamePattern(p string) error {
	if p == "" {
		return errors.New("empty name pattern")
	}
	for i := 0; i < len(p); i++ {
		if p[i] == '\\' {
			if i+1 == len(p) {
				return errors.New(`name pattern ends in "\": escape what?`)
			}
			i++
		}
	}
	return nil
}

// MatchName reports whether s matches the name pattern p. It allocates
// nothing and takes time proportional to len(p)*len(s) at worst.
func MatchName(p, s string) bool {
	// Classic wildcard matching: on a mismatch, go back to the last
	// star and let it eat one more byte.
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		if pi < len(p) {
			switch c := p[pi]; c {
			case '*':
				star, mark = pi, si
				pi++
				continue
			case '?':
				pi++
				si++
				continue
			case '\\':
				if pi+1 < len(p) && p[pi+1] == s[si] {
					pi += 2
					si++
					continue
				}
			default:
				if c == s[si] {
					pi++
					si++
					continue
				}
			}
		}
		if star < 0 {
			return false
		}
		pi = star + 1
		mark++
		si = mark
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
