package guest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// Raw trigger guest markers on COM1.
const (
	// RawTriggerSent is printed after the command went out on TriggerPort.
	RawTriggerSent = "KFV-RAW trigger sent\n"
	// RawTriggerPeek opens the line with the bytes read at RawPeekSegment.
	RawTriggerPeek = "KFV-RAW peek "
	// RawTriggerDone is printed last; the guest then halts for good
	// (interrupts off), so that the host can still query QEMU.
	RawTriggerDone = "KFV-RAW done\n"
	// RawPeekAddr is the guest physical address the guest reads and
	// prints: the first byte above 1 MiB. RawTriggerArgs gives the VM
	// 1 MiB of RAM, so nothing is mapped there unless someone adds a KVM
	// memory slot (the legacy VGA window at 0xA0000, unassigned on real
	// hardware without VGA, is RAM in QEMU's q35 and pc machines).
	RawPeekAddr = 0x100000
	// In real mode the guest reaches RawPeekAddr as FFFF:0010 (A20 is
	// on from reset in QEMU).
	rawPeekSegment = 0xffff
	rawPeekOffset  = RawPeekAddr - rawPeekSegment<<4
	// RawPeekBytes is how many bytes the guest reads and prints there.
	RawPeekBytes = 16
)

// RawTriggerImage returns a 64 KiB -bios image that sends the implant
// the command for payload and arg through TriggerPort (one "out dx, al"
// per byte, so that a vCPU thread carries each byte to QEMU as a
// KVM_EXIT_IO), prints RawTriggerSent, then RawTriggerPeek followed by
// the RawPeekBytes bytes at RawPeekAddr as they are and a newline,
// then RawTriggerDone, and halts with interrupts off.
func RawTriggerImage(payload, arg string) ([]byte, error) {
	cmd, err := TriggerCommand(payload, arg)
	if err != nil {
		return nil, err
	}
	a := newAsm16()
	a.label("start")
	a.b(0xfa)       // cli
	a.b(0x31, 0xc0) // xor ax, ax
	a.b(0x8e, 0xd0) // mov ss, ax
	a.b(0xbc)       // mov sp, 0x7000
	a.w(0x7000)     //
	a.b(0xbe)       // mov si, cmd
	a.ref("cmd", abs16, 0)
	a.b(0xb9) // mov cx, len(cmd)
	a.w(uint16(len(cmd)))
	a.b(0xba) // mov dx, TriggerPort
	a.w(TriggerPort)
	a.label("send")
	a.b(0x2e, 0xac) // cs lodsb
	a.b(0xee)       // out dx, al   (KVM_EXIT_IO, port TriggerPort)
	a.b(0xe2)       // loop send
	a.ref("send", rel8, 0)
	a.b(0xbe) // mov si, sent
	a.ref("sent", abs16, 0)
	a.b(0xe8) // call puts
	a.ref("puts", rel16, 0)
	a.b(0xbe) // mov si, peek
	a.ref("peek", abs16, 0)
	a.b(0xe8) // call puts   (leaves dx = COM1)
	a.ref("puts", rel16, 0)
	a.b(0xb8) // mov ax, rawPeekSegment
	a.w(rawPeekSegment)
	a.b(0x8e, 0xd8) // mov ds, ax
	a.b(0xbe)       // mov si, rawPeekOffset
	a.w(rawPeekOffset)
	a.b(0xb9) // mov cx, RawPeekBytes
	a.w(RawPeekBytes)
	a.label("copy")
	a.b(0xac) // lodsb        (ds:si: guest physical RawPeekAddr onwards)
	a.b(0xee) // out dx, al   (COM1)
	a.b(0xe2) // loop copy
	a.ref("copy", rel8, 0)
	a.b(0xbe) // mov si, done   (puts reads cs:si, ds does not matter)
	a.ref("done", abs16, 0)
	a.b(0xe8) // call puts
	a.ref("puts", rel16, 0)
	a.label("halt")
	a.b(0xfa) // cli
	a.b(0xf4) // hlt
	a.b(0xeb) // jmp halt
	a.ref("halt", rel8, 0)

	a.label("puts")
	assemblePuts(a)
	a.label("cmd")
	a.b(cmd...)
	a.label("sent")
	a.b([]byte(RawTriggerSent)...)
	a.b(0)
	a.label("peek")
	a.b([]byte(RawTriggerPeek)...)
	a.b(0)
	a.label("done")
	a.b('\n')
	a.b([]byte(RawTriggerDone)...)
	a.b(0)

	if err := a.org(rawResetVector); err != nil {
		return nil, fmt.Errorf("assemble raw trigger guest: %w", err)
	}
	a.b(0xea) // jmp far F000:start
	a.ref("start", abs16, 2)
	a.w(rawSegment)
	if err := a.org(rawImageSize); err != nil {
		return nil, fmt.Errorf("assemble raw trigger guest: %w", err)
	}
	img, err := a.link(0)
	if err != nil {
		return nil, fmt.Errorf("assemble raw trigger guest: %w", err)
	}
	return img, nil
}

// BuildRawTrigger writes the raw trigger guest for payload and arg into
// dir and returns its path; like BuildRaw, the name carries a hash of
// the content. Boot it with RawTriggerArgs.
func BuildRawTrigger(dir, payload, arg string) (string, error) {
	img, err := RawTriggerImage(payload, arg)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(img)
	path := filepath.Join(dir, fmt.Sprintf("raw-trigger-%s.bin", hex.EncodeToString(sum[:6])))
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, img) {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create raw guest dir: %w", err)
	}
	if err := writeFileAtomic(path, img, 0o644); err != nil {
		return "", fmt.Errorf("write raw trigger guest: %w", err)
	}
	return path, nil
}

// RawTriggerArgs returns RawArgs for the raw trigger guest at path, with
// 1 MiB of RAM so that RawPeekAddr is unassigned.
func RawTriggerArgs(path, accel string) []string {
	args := RawArgs(path, accel)
	for i := range args[:len(args)-1] {
		if args[i] == "-m" {
			args[i+1] = "1"
		}
	}
	return args
}
