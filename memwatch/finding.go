package memwatch

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Kind names what a finding reports.
type Kind string

const (
	// KindModified: watched bytes (text, rodata or RELRO) differ from
	// their baseline.
	KindModified Kind = "modified"
	// KindExecMapping: executable memory that is neither watched code
	// nor the TCG translation buffer: anonymous, memfd, heap, stack,
	// writable-and-executable, or a file mapped after the baseline from
	// outside the known library directories.
	KindExecMapping Kind = "exec-mapping"
	// KindWritable: part of a watched mapping was made writable.
	KindWritable Kind = "writable"
	// KindPerms: part of a watched mapping changed protection otherwise
	// (read-only data made executable, code made unreadable...).
	KindPerms Kind = "perms"
	// KindReplaced: part of a watched mapping is now backed by
	// something else (a MAP_FIXED mapping over it).
	KindReplaced Kind = "replaced"
	// KindUnmapped: part of a watched mapping was unmapped.
	KindUnmapped Kind = "unmapped"
)

// Finding is one integrity violation in QEMU's memory.
type Finding struct {
	Kind       Kind
	Start, End uint64  // [Start, End), page aligned
	Mapping    Mapping // the mapping concerned: as now, or as at baseline for KindUnmapped
	Class      Class   // KindModified: what the pages hold
	Differing  int     // KindModified: bytes that differ from the pristine bytes
	Time       time.Time
	Detail     string
}

func (f Finding) String() string {
	s := fmt.Sprintf("%s %#x-%#x %s %s", f.Kind, f.Start, f.End, f.Mapping.Perms, f.Mapping.Backing())
	if f.Kind == KindModified {
		s += fmt.Sprintf(" %s, %d bytes differ", f.Class, f.Differing)
	}
	if f.Detail != "" {
		s += ": " + f.Detail
	}
	return s
}

// Range is an address range [Start, End).
type Range struct{ Start, End uint64 }

// Contains says r holds all of [start, end).
func (r Range) Contains(start, end uint64) bool {
	return r.End > r.Start && start >= r.Start && end <= r.End
}

// fileBacked says the mapping's path names a file that can back code:
// not anonymous memory, a memfd, System V memory or a pseudo-mapping.
func fileBacked(m *Mapping) bool {
	p := m.Path
	return strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "/memfd:") &&
		!strings.HasPrefix(p, "/SYSV") && !strings.HasPrefix(p, "/dev/")
}

// watchable says a mapping is one memwatch baselines: private, not
// writable, readable or executable, backed by a file.
func watchable(m *Mapping) bool {
	return fileBacked(m) && !m.Shared() && !m.Writable() && (m.Readable() || m.Executable())
}

// mapsDiff compares the current maps with the watched mappings of the
// baseline. It returns the findings about watched mappings and stray
// executable memory, and the mappings that could be watched but are not
// yet (a library loaded after the baseline) and are not in skip.
// lateDirs are the directories whose files may be mapped executable
// after the baseline without a finding; tcg is the TCG translation
// buffer (empty under KVM).
func mapsDiff(watched []Mapping, cur []Mapping, tcg Range, lateDirs map[string]bool, skip map[Range]bool) (found []Finding, late []Mapping) {
	for _, w := range watched {
		at := w.Start
		for i := range cur {
			c := &cur[i]
			if c.End <= at || c.Start >= w.End {
				continue
			}
			if c.Start > at {
				found = append(found, Finding{Kind: KindUnmapped, Start: at, End: c.Start, Mapping: w})
			}
			lo, hi := max(c.Start, at), min(c.End, w.End)
			wantOff := w.Offset + (lo - w.Start)
			haveOff := c.Offset + (lo - c.Start)
			switch {
			case c.Inode != w.Inode || c.Dev != w.Dev || haveOff != wantOff || c.Path != w.Path:
				found = append(found, Finding{Kind: KindReplaced, Start: lo, End: hi, Mapping: *c,
					Detail: fmt.Sprintf("was %s offset %#x", w.Path, wantOff)})
			case c.Perms != w.Perms && c.Writable():
				found = append(found, Finding{Kind: KindWritable, Start: lo, End: hi, Mapping: *c,
					Detail: "was " + w.Perms})
			case c.Perms != w.Perms:
				found = append(found, Finding{Kind: KindPerms, Start: lo, End: hi, Mapping: *c,
					Detail: "was " + w.Perms})
			}
			at = hi
		}
		if at < w.End {
			found = append(found, Finding{Kind: KindUnmapped, Start: at, End: w.End, Mapping: w})
		}
	}
	for i := range cur {
		c := &cur[i]
		if overlapsAny(watched, c.Start, c.End) {
			continue // judged above
		}
		r := Range{c.Start, c.End}
		switch {
		case c.Path == "[vdso]" || c.Path == "[vsyscall]":
			continue
		case c.Executable() && c.Backing() == "anon" && c.Start < tcg.End && tcg.Start < c.End:
			// The buffer, or an anonymous mapping the kernel merged
			// with it: what lies outside the buffer is reported.
			if c.Start < tcg.Start {
				found = append(found, Finding{Kind: KindExecMapping, Start: c.Start, End: tcg.Start, Mapping: *c,
					Detail: "next to the TCG buffer"})
			}
			if c.End > tcg.End {
				found = append(found, Finding{Kind: KindExecMapping, Start: tcg.End, End: c.End, Mapping: *c,
					Detail: "next to the TCG buffer"})
			}
		case watchable(c) && skip[r]:
			if c.Executable() {
				found = append(found, Finding{Kind: KindExecMapping, Start: c.Start, End: c.End, Mapping: *c,
					Detail: "executable file mapping memwatch cannot check"})
			}
		case watchable(c):
			late = append(late, *c)
			if c.Executable() && (strings.HasSuffix(c.Path, " (deleted)") || !lateDirs[filepath.Dir(c.Path)]) {
				found = append(found, Finding{Kind: KindExecMapping, Start: c.Start, End: c.End, Mapping: *c,
					Detail: "file mapped executable after the baseline from outside the library directories"})
			}
		case c.Executable():
			found = append(found, Finding{Kind: KindExecMapping, Start: c.Start, End: c.End, Mapping: *c})
		}
	}
	return found, late
}

func overlapsAny(ms []Mapping, start, end uint64) bool {
	for i := range ms {
		if ms[i].Start < end && start < ms[i].End {
			return true
		}
	}
	return false
}

// diffBytes counts the bytes that differ between a and b (of equal
// length; extra bytes of the longer one count as different).
func diffBytes(a, b []byte) int {
	n := 0
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n + max(len(a), len(b)) - min(len(a), len(b))
}

// tcgBuffer finds QEMU's TCG translation buffer in maps: the run of
// adjacent anonymous mappings (executable regions and their PROT_NONE
// guard pages) around the largest anonymous writable-and-executable
// mapping of at least 1 MiB. It returns an empty Range when there is
// none.
func tcgBuffer(maps []Mapping) Range {
	best := -1
	for i := range maps {
		m := &maps[i]
		if m.Backing() == "anon" && m.Writable() && m.Executable() && m.End-m.Start >= 1<<20 &&
			(best < 0 || m.End-m.Start > maps[best].End-maps[best].Start) {
			best = i
		}
	}
	if best < 0 {
		return Range{}
	}
	inBuffer := func(m *Mapping) bool {
		return m.Backing() == "anon" && (m.Perms == "rwxp" || m.Perms == "---p")
	}
	lo, hi := best, best
	for lo > 0 && maps[lo-1].End == maps[lo].Start && inBuffer(&maps[lo-1]) {
		lo--
	}
	for hi+1 < len(maps) && maps[hi+1].Start == maps[hi].End && inBuffer(&maps[hi+1]) {
		hi++
	}
	// Guard pages at the ends are not the buffer's.
	for lo < best && maps[lo].Perms == "---p" {
		lo++
	}
	for hi > best && maps[hi].Perms == "---p" {
		hi--
	}
	return Range{maps[lo].Start, maps[hi].End}
}
