package memwatch

import "testing"

const sampleMaps = `55d5a0000000-55d5a0200000 r--p 00000000 fd:01 1234  /usr/bin/qemu-system-x86_64
55d5a0200000-55d5a0800000 r-xp 00200000 fd:01 1234  /usr/bin/qemu-system-x86_64
55d5a2000000-55d5a2100000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0001000000 rw-p 00000000 00:00 0 
7f0001000000-7f0001001000 rw-p 00000000 00:00 0 
7f0002000000-7f0002100000 rw-s 00000000 00:01 99 /memfd:pc.ram (deleted)
7f0003000000-7f0003001000 rw-s 00000000 00:01 5 /dev/zero (deleted)
7f0004000000-7f0004001000 rw-p 00003000 fd:01 777 /tmp/dir with space/implant.so
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
`

func TestParseMaps(t *testing.T) {
	maps, err := ParseMaps([]byte(sampleMaps))
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) != 9 {
		t.Fatalf("%d mappings, want 9", len(maps))
	}
	m := maps[1]
	if m.Start != 0x55d5a0200000 || m.End != 0x55d5a0800000 || !m.Executable() || m.Writable() || m.Offset != 0x200000 || m.Inode != 1234 || m.Path != "/usr/bin/qemu-system-x86_64" {
		t.Errorf("text mapping parsed as %+v", m)
	}
	if maps[7].Path != "/tmp/dir with space/implant.so" {
		t.Errorf("path with spaces: %q", maps[7].Path)
	}
	wantBacking := []string{"/usr/bin/qemu-system-x86_64", "/usr/bin/qemu-system-x86_64", "[heap]", "anon", "anon", "memfd:pc.ram", "anon", "/tmp/dir with space/implant.so", "[stack]"}
	for i, w := range wantBacking {
		if got := maps[i].Backing(); got != w {
			t.Errorf("mapping %d backing %q, want %q", i, got, w)
		}
	}
}

func TestBackingOf(t *testing.T) {
	maps, err := ParseMaps([]byte(sampleMaps))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		addr, size uint64
		want       string
	}{
		{"inside anon", 0x7f0000001000, 0x1000, "anon"},
		{"across two anon mappings", 0x7f0000fff000, 0x2000, "anon"},
		{"text", 0x55d5a0201000, 0x1000, "/usr/bin/qemu-system-x86_64"},
		{"text then heap hole", 0x55d5a07ff000, 0x2000, "unmapped"},
		{"rodata into text", 0x55d5a01ff000, 0x2000, "/usr/bin/qemu-system-x86_64"},
		{"anon into memfd hole", 0x7f0001000000, 0x2000, "unmapped"},
		{"heap", 0x55d5a2000000, 0x1000, "[heap]"},
		{"memfd RAM", 0x7f0002000000, 0x100000, "memfd:pc.ram"},
		{"library data", 0x7f0004000000, 0x1000, "/tmp/dir with space/implant.so"},
		{"unmapped", 0x1000, 0x1000, "unmapped"},
		{"overflow", ^uint64(0) - 10, 100, "unmapped"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := BackingOf(maps, c.addr, c.size); got != c.want {
				t.Errorf("BackingOf(%#x, %#x) = %q, want %q", c.addr, c.size, got, c.want)
			}
		})
	}
	// Different backings side by side.
	mixed := []Mapping{{Start: 0, End: 0x1000, Perms: "rw-p"}, {Start: 0x1000, End: 0x2000, Perms: "r-xp", Path: "/lib/x.so"}}
	if got := BackingOf(mixed, 0, 0x2000); got != "mixed" {
		t.Errorf("mixed range: %q", got)
	}
}

func TestParseMapsErrors(t *testing.T) {
	for _, in := range []string{
		"zz-10 r--p 0 00:00 0",
		"10-zz r--p 0 00:00 0",
		"20-10 r--p 0 00:00 0",
		"10-20 r-p 0 00:00 0",
		"10-20 r--p 0 00:00",
		"10-20 r--p xyz 00:00 0",
		"10-20 r--p 0 00:00 notanumber",
		"1020 r--p 0 00:00 0",
	} {
		if _, err := ParseMaps([]byte(in + "\n")); err == nil {
			t.Errorf("ParseMaps(%q) accepted it", in)
		}
	}
}

func FuzzParseMaps(f *testing.F) {
	f.Add([]byte(sampleMaps))
	f.Add([]byte("0-1 ---p 0 0:0 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		maps, err := ParseMaps(b)
		if err != nil {
			return
		}
		for _, m := range maps {
			if m.End < m.Start {
				t.Fatalf("accepted a reversed range %+v", m)
			}
			_ = m.Backing()
			_ = BackingOf(maps, m.Start, m.End-m.Start)
		}
	})
}
