package memwatch

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64 // [Start, End)
	Perms      string // "r-xp"
	Offset     uint64
	Dev        string // "fd:01"
	Inode      uint64
	Path       string // as the kernel prints it; "" for anonymous memory
}

// Readable, Writable, Executable and Shared decode Perms.
func (m *Mapping) Readable() bool   { return len(m.Perms) > 0 && m.Perms[0] == 'r' }
func (m *Mapping) Writable() bool   { return len(m.Perms) > 1 && m.Perms[1] == 'w' }
func (m *Mapping) Executable() bool { return len(m.Perms) > 2 && m.Perms[2] == 'x' }
func (m *Mapping) Shared() bool     { return len(m.Perms) > 3 && m.Perms[3] == 's' }

// Backing names what backs the mapping, in the vocabulary of profile
// backing globs: "anon" for anonymous memory (private, or shared through
// /dev/zero), "[heap]", "[stack]", "[vdso]"..., "memfd:NAME", "shm" for
// System V shared memory, or the file's path (with " (deleted)" when the
// file was removed).
func (m *Mapping) Backing() string {
	p := m.Path
	switch {
	case p == "":
		return "anon"
	case strings.HasPrefix(p, "[anon:"):
		return "anon"
	case strings.HasPrefix(p, "/memfd:"):
		return "memfd:" + strings.TrimSuffix(strings.TrimPrefix(p, "/memfd:"), " (deleted)")
	case p == "/dev/zero (deleted)":
		return "anon"
	case strings.HasPrefix(p, "/SYSV") && strings.HasSuffix(p, " (deleted)"):
		return "shm"
	}
	return p
}

// ParseMaps parses the text of /proc/PID/maps. It accepts any input
// without panicking; malformed lines are errors naming the line.
func ParseMaps(b []byte) ([]Mapping, error) {
	var out []Mapping
	for n := 1; len(b) > 0; n++ {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(line) == 0 {
			continue
		}
		m, err := parseMapsLine(string(line))
		if err != nil {
			return out, fmt.Errorf("maps line %d: %w", n, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func parseMapsLine(s string) (Mapping, error) {
	var m Mapping
	// address perms offset dev inode [path]; the path may contain spaces.
	fields := make([]string, 0, 5)
	rest := s
	for len(fields) < 5 {
		rest = strings.TrimLeft(rest, " ")
		i := strings.IndexByte(rest, ' ')
		if i < 0 {
			fields = append(fields, rest)
			rest = ""
			break
		}
		fields = append(fields, rest[:i])
		rest = rest[i:]
	}
	if len(fields) < 5 {
		return m, fmt.Errorf("%q: want at least 5 fields", s)
	}
	lo, hi, ok := strings.Cut(fields[0], "-")
	if !ok {
		return m, fmt.Errorf("%q: bad address range", fields[0])
	}
	var err error
	if m.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
		return m, fmt.Errorf("start %q: %w", lo, err)
	}
	if m.End, err = strconv.ParseUint(hi, 16, 64); err != nil {
		return m, fmt.Errorf("end %q: %w", hi, err)
	}
	if m.End < m.Start {
		return m, fmt.Errorf("range %s ends before it starts", fields[0])
	}
	if len(fields[1]) != 4 {
		return m, fmt.Errorf("perms %q", fields[1])
	}
	m.Perms = fields[1]
	if m.Offset, err = strconv.ParseUint(fields[2], 16, 64); err != nil {
		return m, fmt.Errorf("offset %q: %w", fields[2], err)
	}
	m.Dev = fields[3]
	if m.Inode, err = strconv.ParseUint(fields[4], 10, 64); err != nil {
		return m, fmt.Errorf("inode %q: %w", fields[4], err)
	}
	m.Path = strings.TrimLeft(rest, " ")
	return m, nil
}

// BackingOf returns what backs [addr, addr+size) in maps: the Backing of
// the mapping(s) covering it when they all agree and leave no hole, "mixed"
// when they differ, "unmapped" when part of the range is not mapped.
func BackingOf(maps []Mapping, addr, size uint64) string {
	if size == 0 {
		size = 1
	}
	end := addr + size
	if end < addr {
		return "unmapped"
	}
	backing := ""
	at := addr
	for i := range maps {
		m := &maps[i]
		if m.End <= at || m.Start > at {
			continue
		}
		b := m.Backing()
		switch {
		case backing == "":
			backing = b
		case backing != b:
			return "mixed"
		}
		at = m.End
		if at >= end {
			return backing
		}
	}
	return "unmapped"
}
