package profiles

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

//go:generate go run ./internal/mknames -dir .

// nameValue is one row of a name table. Tables are sorted by name so that
// lookups are binary searches and duplicates are easy to test for.
type nameValue struct {
	name  string
	value int64
}

func lookup(table []nameValue, name string) (int64, bool) {
	i := sort.Search(len(table), func(i int) bool { return table[i].name >= name })
	if i < len(table) && table[i].name == name {
		return table[i].value, true
	}
	return 0, false
}

func names(table []nameValue) []string {
	out := make([]string, len(table))
	for i, nv := range table {
		out[i] = nv.name
	}
	return out
}

// SyscallNumber returns the x86_64 number of the named syscall.
func SyscallNumber(name string) (int, bool) {
	v, ok := lookup(syscallTable, name)
	return int(v), ok
}

// SyscallNames returns every syscall name profiles know, sorted.
func SyscallNames() []string { return names(syscallTable) }

// ErrnoNumber returns the value of an errno name such as "EPERM".
func ErrnoNumber(name string) (int, bool) {
	v, ok := lookup(errnoTable, name)
	return int(v), ok
}

// ErrnoName returns the name of an errno value, or "" if it has none.
// Where glibc has two names for one value, the first in sort order wins.
func ErrnoName(errno int) string {
	for _, nv := range errnoTable {
		if nv.value == int64(errno) {
			return nv.name
		}
	}
	return ""
}

// Constant returns the value of a symbolic constant profiles may use in
// argument conditions: an ioctl request (KVM_RUN), a flag (PROT_EXEC,
// CLONE_THREAD, O_CREAT), an address family (AF_UNIX) or a signal
// (SIGKILL). Negative constants (AT_FDCWD) are returned as they are.
func Constant(name string) (int64, bool) {
	if v, ok := lookup(constTable, name); ok {
		return v, true
	}
	return lookup(ioctlTable, name)
}

// ConstantNames returns every symbolic constant name, sorted.
func ConstantNames() []string {
	out := append(names(constTable), names(ioctlTable)...)
	sort.Strings(out)
	return out
}

// parseNumber reads an argument value written as a string: a decimal or
// 0x/0o/0b number (optionally negative), a constant name, or names and
// numbers joined with "|". The result is the 64-bit two's complement.
func parseNumber(s string) (uint64, error) {
	if strings.TrimSpace(s) == "" {
		return 0, fmt.Errorf("empty value")
	}
	var v uint64
	for _, part := range strings.Split(s, "|") {
		part = strings.TrimSpace(part)
		switch {
		case part == "":
			return 0, fmt.Errorf("empty term in %q", s)
		case part[0] == '-' || (part[0] >= '0' && part[0] <= '9'):
			n, err := parseInt(part)
			if err != nil {
				return 0, err
			}
			v |= n
		default:
			c, ok := Constant(part)
			if !ok {
				return 0, fmt.Errorf("unknown constant %q", part)
			}
			v |= uint64(c)
		}
	}
	return v, nil
}

func parseInt(s string) (uint64, error) {
	if strings.HasPrefix(s, "-") {
		n, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			return 0, fmt.Errorf("bad number %q", s)
		}
		return uint64(n), nil
	}
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return 0, fmt.Errorf("bad number %q", s)
	}
	return n, nil
}

// fits32 reports whether v, a 64-bit two's complement value, is what a
// 32-bit int or unsigned int argument can hold, and returns its low 32 bits.
func fits32(v uint64) (uint64, bool) {
	if v <= math.MaxUint32 || (int64(v) < 0 && int64(v) >= math.MinInt32) {
		return v & math.MaxUint32, true
	}
	return 0, false
}
