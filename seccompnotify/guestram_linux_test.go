//go:build linux

package seccompnotify

import (
	"os"
	"testing"
)

const testSmaps = `55d000000000-55d000001000 r--p 00000000 fd:01 123 /usr/bin/qemu-system-x86_64
Size:                  4 kB
VmFlags: rd mr mw me dw sd
55d000100000-55d000200000 rw-p 00000000 00:00 0
Size:               1024 kB
VmFlags: rd wr mr mw me ac sd
7f0000000000-7f0010000000 rw-p 00000000 00:00 0
Size:             262144 kB
VmFlags: rd wr mr mw me dc ac sd hg
7f0010000000-7f0010001000 ---p 00000000 00:00 0
Size:                  4 kB
VmFlags: mr mw me dc sd
7f0020000000-7f0020010000 rw-p 00000000 00:00 0
Size:                 64 kB
VmFlags: rd wr mr mw me dc ac sd
7f0030000000-7f0030010000 rw-s 00000000 00:01 77 /memfd:pc.ram (deleted)
Size:                 64 kB
VmFlags: rd wr sh mr mw me ms dc sd
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
Size:                132 kB
VmFlags: rd wr mr mw me gd ac
`

// TestGuestRAM: the RAM blocks are the anonymous mappings QEMU marked
// MADV_DONTFORK; once sealed, a slot over other anonymous memory (the
// heap, .bss, a stack) is host memory, and one over a block is not.
func TestGuestRAM(t *testing.T) {
	got, err := dontforkAnon([]byte(testSmaps))
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]uint64{{0x7f0000000000, 0x7f0010001000}, {0x7f0020000000, 0x7f0020010000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("dontforkAnon = %x, want %x", got, want)
	}
	var d Decoder
	const pid = 42
	if b := d.slotBacking(pid, "anon", 0x55d000100000, 4096); b != "anon" {
		t.Errorf("before the seal: %q, want anon", b)
	}
	d.ram.Store(&guestRAM{pid: pid, ranges: got})
	for _, tc := range []struct {
		addr, size uint64
		backing    string
		want       string
	}{
		{0x7f0000000000, 256 << 20, "anon", "anon"},
		{0x7f0020000000, 64 << 10, "anon", "anon"},
		{0x55d000100000, 4096, "anon", AnonHost},               // .bss
		{0x7f000ffff000, 0x2000, "anon", "anon"},               // into the guard page: still the block's
		{0x7f0020000000, 128 << 10, "anon", AnonHost},          // past the block's end
		{0x7f0030000000, 4096, "memfd:pc.ram", "memfd:pc.ram"}, // not anonymous: the rules decide
	} {
		if b := d.slotBacking(pid, tc.backing, tc.addr, tc.size); b != tc.want {
			t.Errorf("slot %#x+%#x: %q, want %q", tc.addr, tc.size, b, tc.want)
		}
	}
	if b := d.slotBacking(pid+1, "anon", 0x55d000100000, 4096); b != "anon" {
		t.Errorf("another process (a restarted QEMU, not sealed): %q, want anon", b)
	}
}

// TestSealGuestRAMSelf seals this process: it reads real smaps.
func TestSealGuestRAMSelf(t *testing.T) {
	var d Decoder
	if _, _, err := d.SealGuestRAM(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if !d.GuestRAMSealed(os.Getpid()) || d.GuestRAMSealed(os.Getpid()+1) {
		t.Error("sealed for the wrong process")
	}
}
