package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kfv/guest"
)

// TestImplantConstants: the C implant and the Go tests agree on the
// protocol and on where the payloads leave their marks.
func TestImplantConstants(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "integration", "implant", "implant.c"))
	if err != nil {
		t.Fatalf("read implant source: %v", err)
	}
	for _, want := range []string{
		fmt.Sprintf("#define MAGIC %q", guest.TriggerMagic),
		fmt.Sprintf("#define TRIGGER_PORT 0x%x", guest.TriggerPort),
		fmt.Sprintf("#define SECRET_OFFSET (1 << %d)", bitsOf(implantSecretOffset)),
		fmt.Sprintf("#define OTHER_DISK_MARK %q", implantOtherDiskMark),
		fmt.Sprintf("= %q;", implantHostMemory),
	} {
		if !bytes.Contains(src, []byte(want)) {
			t.Errorf("implant.c lacks %s", want)
		}
	}
}

func bitsOf(v int) int {
	n := 0
	for v > 1 {
		v >>= 1
		n++
	}
	return n
}

func TestTriggerCommand(t *testing.T) {
	for _, tc := range []struct {
		payload, arg string
		ok           bool
	}{
		{"exec-shell", "/tmp/x/marker", true},
		{"rwx", "", true},
		{"neighbor-peek", "123:7f00", true},
		{"", "x", false},
		{"Exec", "x", false},
		{"exec shell", "x", false},
		{"exec-shell", "a b", false},
		{"exec-shell", "a'b", false},
		{"exec-shell", "a\x00b", false},
		{"exec-shell", strings.Repeat("a", 401), false},
	} {
		t.Run(fmt.Sprintf("%s/%q", tc.payload, tc.arg), func(t *testing.T) {
			cmd, err := guest.TriggerCommand(tc.payload, tc.arg)
			if (err == nil) != tc.ok {
				t.Fatalf("TriggerCommand(%q, %q) error %v, want ok=%t", tc.payload, tc.arg, err, tc.ok)
			}
			_, cerr := guest.TriggerCmdline(tc.payload, tc.arg, 1)
			if (cerr == nil) != tc.ok {
				t.Fatalf("TriggerCmdline(%q, %q) error %v, want ok=%t", tc.payload, tc.arg, cerr, tc.ok)
			}
			if !tc.ok {
				return
			}
			want := guest.TriggerMagic + "\x00" + tc.payload + "\x00" + tc.arg + "\x00"
			if string(cmd) != want {
				t.Errorf("command %q, want %q", cmd, want)
			}
		})
	}
}

func TestRawTriggerImage(t *testing.T) {
	img, err := guest.RawTriggerImage("kvm-memslot", "100000")
	if err != nil {
		t.Fatal(err)
	}
	if len(img) != 0x10000 {
		t.Fatalf("image is %d bytes, want 64 KiB", len(img))
	}
	cmd, err := guest.TriggerCommand("kvm-memslot", "100000")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(img, cmd) {
		t.Errorf("image does not hold the command %q", cmd)
	}
	if img[0xfff0] != 0xea {
		t.Errorf("reset vector holds 0x%02x, want a far jump (0xea)", img[0xfff0])
	}
	args := guest.RawTriggerArgs("/x.bin", "kvm")
	if !strings.Contains(strings.Join(args, " "), "-m 1 ") {
		t.Errorf("RawTriggerArgs %q: want -m 1, so that RawPeekAddr is unassigned", args)
	}
}

func TestParseImplant(t *testing.T) {
	stderr := "qemu: warning\n" +
		"kfv-implant: loaded pid=42\n" +
		"kfv-implant: trigger payload=rwx arg= tid=43 thread=CPU 0/KVM\n" +
		"kfv-implant: payload=other result=ok detail=x\n" +
		"kfv-implant: payload=rwx result=fail detail=mmap rwx: Permission denied (stub not run)\n"
	r := parseImplant(stderr, "rwx")
	if !r.loadedIn(42) || r.loadedIn(7) {
		t.Errorf("loaded %v, want [42]", r.Loaded)
	}
	if r.TID != 43 || r.Thread != "CPU 0/KVM" || r.Result != "fail" || !strings.HasPrefix(r.Detail, "mmap rwx") {
		t.Errorf("parsed %+v", r)
	}
	if r := parseImplant("kfv-implant: payload=rwx result=exec detail=a\nkfv-implant: payload=rwx result=fail detail=b\n", "rwx"); r.Result != "fail" {
		t.Errorf("last result should win, got %q", r.Result)
	}
}
