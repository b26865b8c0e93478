package memwatch

import (
	"fmt"
	"testing"
)

func TestDiffBytes(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"abc", "abc", 0},
		{"abc", "abd", 1},
		{"abc", "xyz", 3},
		{"abc", "ab", 1},
		{"", "abcd", 4},
	}
	for _, c := range cases {
		if got := diffBytes([]byte(c.a), []byte(c.b)); got != c.want {
			t.Errorf("diffBytes(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

const (
	libc   = "/usr/lib/x86_64-linux-gnu/libc.so.6"
	libDir = "/usr/lib/x86_64-linux-gnu"
)

// The watched mappings of a small process: libc's four read-only
// mappings (the third is RELRO).
var watchedLibc = []Mapping{
	{Start: 0x7f0000000000, End: 0x7f0000028000, Perms: "r--p", Offset: 0, Dev: "fd:01", Inode: 7, Path: libc},
	{Start: 0x7f0000028000, End: 0x7f000017d000, Perms: "r-xp", Offset: 0x28000, Dev: "fd:01", Inode: 7, Path: libc},
	{Start: 0x7f000017d000, End: 0x7f00001d5000, Perms: "r--p", Offset: 0x17d000, Dev: "fd:01", Inode: 7, Path: libc},
	{Start: 0x7f00001d5000, End: 0x7f00001d9000, Perms: "r--p", Offset: 0x1d4000, Dev: "fd:01", Inode: 7, Path: libc},
}

func withLibc(extra ...Mapping) []Mapping {
	out := append([]Mapping(nil), watchedLibc...)
	out = append(out, Mapping{Start: 0x7f00001d9000, End: 0x7f00001db000, Perms: "rw-p", Offset: 0x1d8000, Dev: "fd:01", Inode: 7, Path: libc})
	return append(out, extra...)
}

func TestMapsDiff(t *testing.T) {
	tcg := Range{0x7e0000000000, 0x7e0040000000}
	text := watchedLibc[1]
	split := func(perms string) []Mapping {
		// text split in three by an mprotect of its middle page
		a, b, c := text, text, text
		a.End = text.Start + 0x1000
		b.Start, b.End, b.Offset, b.Perms = a.End, a.End+0x1000, text.Offset+0x1000, perms
		c.Start, c.Offset = b.End, text.Offset+0x2000
		return []Mapping{watchedLibc[0], a, b, c, watchedLibc[2], watchedLibc[3]}
	}
	anonOver := split("r-xp")
	anonOver[2].Path, anonOver[2].Inode, anonOver[2].Dev, anonOver[2].Offset = "", 0, "00:00", 0
	cases := []struct {
		name     string
		cur      []Mapping
		want     []string // kind start-end
		wantLate int
	}{
		{name: "unchanged", cur: withLibc()},
		{name: "vdso and TCG buffer", cur: withLibc(
			Mapping{Start: 0x7ffd00000000, End: 0x7ffd00002000, Perms: "r-xp", Path: "[vdso]"},
			Mapping{Start: tcg.Start, End: tcg.End, Perms: "rwxp", Dev: "00:00"})},
		{name: "anonymous rwx", cur: withLibc(Mapping{Start: 0x7f1000000000, End: 0x7f1000001000, Perms: "rwxp", Dev: "00:00"}),
			want: []string{"exec-mapping 0x7f1000000000-0x7f1000001000"}},
		{name: "rwx merged with the TCG buffer", cur: withLibc(Mapping{Start: tcg.Start - 0x1000, End: tcg.End, Perms: "rwxp", Dev: "00:00"}),
			want: []string{fmt.Sprintf("exec-mapping %#x-%#x", tcg.Start-0x1000, tcg.Start)}},
		{name: "executable memfd", cur: withLibc(Mapping{Start: 0x7f1000000000, End: 0x7f1000001000, Perms: "r-xp", Dev: "00:01", Inode: 3, Path: "/memfd:x (deleted)"}),
			want: []string{"exec-mapping 0x7f1000000000-0x7f1000001000"}},
		{name: "executable heap", cur: withLibc(Mapping{Start: 0x55000000, End: 0x55100000, Perms: "rwxp", Path: "[heap]"}),
			want: []string{"exec-mapping 0x55000000-0x55100000"}},
		{name: "text page made writable", cur: split("rwxp"),
			want: []string{fmt.Sprintf("writable %#x-%#x", text.Start+0x1000, text.Start+0x2000)}},
		{name: "text page made unreadable", cur: split("--xp"),
			want: []string{fmt.Sprintf("perms %#x-%#x", text.Start+0x1000, text.Start+0x2000)}},
		{name: "text page replaced by anonymous code", cur: anonOver,
			want: []string{fmt.Sprintf("replaced %#x-%#x", text.Start+0x1000, text.Start+0x2000)}},
		{name: "text unmapped", cur: []Mapping{watchedLibc[0], watchedLibc[2], watchedLibc[3]},
			want: []string{fmt.Sprintf("unmapped %#x-%#x", text.Start, text.End)}},
		{name: "module loaded late from a library directory",
			cur:      withLibc(Mapping{Start: 0x7f2000000000, End: 0x7f2000001000, Perms: "r-xp", Dev: "fd:01", Inode: 9, Path: libDir + "/qemu/accel-tcg.so"}),
			wantLate: 1},
		{name: "library loaded late from elsewhere",
			cur:      withLibc(Mapping{Start: 0x7f2000000000, End: 0x7f2000001000, Perms: "r-xp", Dev: "fd:01", Inode: 9, Path: "/tmp/evil.so"}),
			want:     []string{"exec-mapping 0x7f2000000000-0x7f2000001000"},
			wantLate: 1},
		{name: "deleted library loaded late",
			cur:      withLibc(Mapping{Start: 0x7f2000000000, End: 0x7f2000001000, Perms: "r-xp", Dev: "fd:01", Inode: 9, Path: libDir + "/qemu/x.so (deleted)"}),
			want:     []string{"exec-mapping 0x7f2000000000-0x7f2000001000"},
			wantLate: 1},
	}
	dirs := map[string]bool{libDir: true, libDir + "/qemu": true}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			found, late := mapsDiff(watchedLibc, c.cur, tcg, dirs, nil)
			var got []string
			for _, f := range found {
				got = append(got, fmt.Sprintf("%s %#x-%#x", f.Kind, f.Start, f.End))
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) || len(late) != c.wantLate {
				t.Errorf("findings %v late %d, want %v late %d", got, len(late), c.want, c.wantLate)
			}
		})
	}
}

func TestTCGBuffer(t *testing.T) {
	anon := func(start, end uint64, perms string) Mapping {
		return Mapping{Start: start, End: end, Perms: perms, Dev: "00:00"}
	}
	cases := []struct {
		name string
		maps []Mapping
		want Range
	}{
		{"none", withLibc(), Range{}},
		{"small rwx is not it", []Mapping{anon(0x1000, 0x3000, "rwxp")}, Range{}},
		{"one region", []Mapping{anon(0x100000, 0x200000, "rw-p"), anon(0x40000000, 0x80000000, "rwxp")}, Range{0x40000000, 0x80000000}},
		{"regions with guard pages", []Mapping{
			anon(0x3ffff000, 0x40000000, "---p"),
			anon(0x40000000, 0x50000000, "rwxp"), anon(0x50000000, 0x50001000, "---p"),
			anon(0x50001000, 0x70000000, "rwxp"), anon(0x70000000, 0x70001000, "---p"),
		}, Range{0x40000000, 0x70000000}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := tcgBuffer(c.maps); got != c.want {
				t.Errorf("tcgBuffer = %#x, want %#x", got, c.want)
			}
		})
	}
}
