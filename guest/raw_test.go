package guest

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

func TestRawImage(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts RawOptions
		want string
	}{
		{"hello", RawOptions{ExitCode: 42}, DefaultRawMessage},
		{"hello custom message", RawOptions{Message: "hi there\n"}, "hi there\n"},
		{"loop", RawOptions{Loop: true}, DefaultRawLoopMessage},
		{"loop exits", RawOptions{Loop: true, ExitAfter: 3, ExitCode: 7, TicksPerLine: 2}, DefaultRawLoopMessage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := RawImage(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(img) != rawImageSize {
				t.Fatalf("image is %d bytes, want %d (QEMU wants -bios in 64 KiB multiples)", len(img), rawImageSize)
			}
			if !bytes.Contains(img, append([]byte(tc.want), 0)) {
				t.Errorf("image lacks message %q", tc.want)
			}
			rv := img[rawResetVector:]
			if rv[0] != 0xea || rv[3] != 0x00 || rv[4] != 0xf0 {
				t.Errorf("reset vector = % x, want far jmp to segment f000", rv[:5])
			}
			// The jump target must be the first instruction, cli.
			start := int(rv[1]) | int(rv[2])<<8
			if img[start] != 0xfa {
				t.Errorf("reset vector jumps to %#x holding %#x, want cli", start, img[start])
			}
			if !bytes.Contains(img, []byte{0xb0, tc.opts.ExitCode, 0xe6, DebugExitPort}) && (!tc.opts.Loop || tc.opts.ExitAfter > 0) {
				t.Errorf("image lacks mov al,%d; out 0xf4,al", tc.opts.ExitCode)
			}
			again, err := RawImage(tc.opts)
			if err != nil || !bytes.Equal(img, again) {
				t.Errorf("image not reproducible (err %v)", err)
			}
		})
	}
}

func TestRawOptionsInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts RawOptions
	}{
		{"exit code too big", RawOptions{ExitCode: 128}},
		{"NUL in message", RawOptions{Message: "a\x00b"}},
		{"ticks too many", RawOptions{Loop: true, TicksPerLine: 256}},
		{"negative ticks", RawOptions{Loop: true, TicksPerLine: -1}},
		{"exit after too big", RawOptions{Loop: true, ExitAfter: 1 << 16}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := RawImage(tc.opts); err == nil {
				t.Fatal("RawImage succeeded, want an error")
			}
		})
	}
}

func TestRawExitStatus(t *testing.T) {
	for code, want := range map[uint8]int{0: 1, 1: 3, 42: 85, 127: 255} {
		if got := RawExitStatus(code); got != want {
			t.Errorf("RawExitStatus(%d) = %d, want %d", code, got, want)
		}
	}
}

func TestAsmLinkErrors(t *testing.T) {
	t.Run("undefined label", func(t *testing.T) {
		a := newAsm16()
		a.b(0xeb)
		a.ref("nowhere", rel8, 0)
		if _, err := a.link(0); err == nil || !strings.Contains(err.Error(), "nowhere") {
			t.Fatalf("link: %v, want undefined label error", err)
		}
	})
	t.Run("rel8 out of range", func(t *testing.T) {
		a := newAsm16()
		a.label("top")
		a.b(make([]byte, 200)...)
		a.b(0xeb)
		a.ref("top", rel8, 0)
		if _, err := a.link(0); err == nil {
			t.Fatal("link succeeded, want out of range error")
		}
	})
	t.Run("rel16 backwards", func(t *testing.T) {
		a := newAsm16()
		a.label("top")
		a.b(0x90)
		a.b(0xe9)
		a.ref("top", rel16, 0)
		code, err := a.link(0)
		if err != nil {
			t.Fatal(err)
		}
		if want := []byte{0x90, 0xe9, 0xfc, 0xff}; !bytes.Equal(code, want) {
			t.Fatalf("code = % x, want % x", code, want)
		}
	})
}

// TestRawDisassembly checks the hand-assembled bytes against GNU
// objdump's reading of them, so a wrong encoding shows up as a wrong
// mnemonic rather than as a guest that hangs.
func TestRawDisassembly(t *testing.T) {
	if _, err := exec.LookPath("objdump"); err != nil {
		t.Skip("objdump not in PATH: install binutils")
	}
	img, err := RawImage(RawOptions{Loop: true, ExitAfter: 3, ExitCode: 7})
	if err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/raw.bin"
	if err := writeFileAtomic(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("objdump", "-D", "-b", "binary", "-mi8086", "--start-address=0", "--stop-address=0xe0", path).CombinedOutput()
	if err != nil {
		t.Fatalf("objdump: %v\n%s", err, out)
	}
	dis := string(out)
	for _, want := range []string{
		"rdmsr", "wrmsr", "out    %al,$0x20", "out    %al,$0x43", "sti", "hlt",
		"incb   0x500", "cmpb   $0x12,0x500", "incw   0x502", "rol    $0x4,%bx",
		"cmpw   $0x3,0x502", "out    %al,$0xf4", "iret", "lods   %cs:(%si),%al", "ret",
	} {
		if !strings.Contains(dis, want) {
			t.Errorf("disassembly lacks %q", want)
		}
	}
	if strings.Contains(dis[:strings.Index(dis, "iret")], "(bad)") {
		t.Errorf("objdump finds bad instructions:\n%s", dis)
	}
	rv, err := exec.Command("objdump", "-D", "-b", "binary", "-mi8086", "--start-address=0xfff0", "--stop-address=0xfff5", path).CombinedOutput()
	if err != nil {
		t.Fatalf("objdump: %v\n%s", err, rv)
	}
	if !strings.Contains(string(rv), "ljmp   $0xf000,$0x0") {
		t.Errorf("reset vector does not jump to f000:0000:\n%s", rv)
	}
}
