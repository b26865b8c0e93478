package guest

import (
	"encoding/binary"
	"fmt"
)

// asm16 is a two-pass assembler for the handful of 16-bit real-mode
// instructions the raw guests use. Each instruction is emitted as its
// machine bytes with the mnemonic beside it; labels are resolved when
// the program is linked. TestRawDisassembly checks the output against
// objdump when binutils is installed.
type asm16 struct {
	code   []byte
	labels map[string]int
	fixups []fixup
}

type fixupKind int

const (
	rel8  fixupKind = iota // signed 8-bit displacement from the next instruction
	rel16                  // signed 16-bit displacement from the next instruction
	abs16                  // 16-bit offset of the label within the code segment
)

type fixup struct {
	at    int // position of the field in code
	end   int // position just after the instruction (base for rel*)
	label string
	kind  fixupKind
}

func newAsm16() *asm16 {
	return &asm16{labels: make(map[string]int)}
}

// label defines name at the current position.
func (a *asm16) label(name string) {
	a.labels[name] = len(a.code)
}

// b emits raw bytes.
func (a *asm16) b(bs ...byte) {
	a.code = append(a.code, bs...)
}

// w emits a little-endian 16-bit word.
func (a *asm16) w(v uint16) {
	a.code = binary.LittleEndian.AppendUint16(a.code, v)
}

// ref emits a placeholder for label of the given kind. tail is the
// number of instruction bytes that still follow the field (an immediate
// after a displacement), so that rel* fixups know where the next
// instruction starts.
func (a *asm16) ref(label string, kind fixupKind, tail int) {
	n := 2
	if kind == rel8 {
		n = 1
	}
	at := len(a.code)
	a.code = append(a.code, make([]byte, n)...)
	a.fixups = append(a.fixups, fixup{at: at, end: at + n + tail, label: label, kind: kind})
}

// org pads with zeros up to offset off.
func (a *asm16) org(off int) error {
	if len(a.code) > off {
		return fmt.Errorf("org 0x%x: code already at 0x%x", off, len(a.code))
	}
	a.code = append(a.code, make([]byte, off-len(a.code))...)
	return nil
}

// link resolves the fixups and returns the code. base is the offset of
// code[0] within its segment, added to abs16 references.
func (a *asm16) link(base int) ([]byte, error) {
	for _, f := range a.fixups {
		target, ok := a.labels[f.label]
		if !ok {
			return nil, fmt.Errorf("link: undefined label %q", f.label)
		}
		switch f.kind {
		case rel8:
			d := target - f.end
			if d < -128 || d > 127 {
				return nil, fmt.Errorf("link: label %q out of rel8 range (%d)", f.label, d)
			}
			a.code[f.at] = byte(int8(d))
		case rel16:
			d := target - f.end
			binary.LittleEndian.PutUint16(a.code[f.at:], uint16(int16(d)))
		case abs16:
			v := base + target
			if v > 0xffff {
				return nil, fmt.Errorf("link: label %q beyond 64 KiB segment (0x%x)", f.label, v)
			}
			binary.LittleEndian.PutUint16(a.code[f.at:], uint16(v))
		}
	}
	return a.code, nil
}
