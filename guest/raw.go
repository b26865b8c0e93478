package guest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Raw-guest layout. QEMU's -bios wants a ROM whose size is a multiple of
// 64 KiB; it maps the image just below 4 GiB and aliases its last 128 KiB
// at 0xE0000-0xFFFFF ("isa-bios"). A 64 KiB image therefore appears at
// physical 0xF0000 too, so segment 0xF000 offset N is image byte N.
const (
	rawImageSize   = 0x10000
	rawSegment     = 0xf000
	rawResetVector = 0xfff0 // CS:IP = F000:FFF0 at reset (CS base 0xFFFF0000)

	// DebugExitPort is the iobase of the isa-debug-exit device in RawArgs.
	DebugExitPort = 0xf4
	// COM1 is the I/O port of the first 16550 UART.
	COM1 = 0x3f8

	// Scratch RAM used by the loop guest (below the 0x7000 stack).
	rawSubtick = 0x500 // byte: PIT interrupts since the last line
	rawLines   = 0x502 // word: tick lines printed
)

// What the raw guests print first unless RawOptions.Message says otherwise.
const (
	DefaultRawMessage     = "KFV-RAW hello\n"
	DefaultRawLoopMessage = "KFV-RAW loop\n"
)

// RawOptions chooses what a raw-code guest does.
type RawOptions struct {
	// Loop keeps the guest running: it prints "KFV-RAW tick NNNN\n"
	// (NNNN in hex) every TicksPerLine interrupts of the PIT, which
	// fires at about 18.2 Hz, halting in between. Without Loop the guest
	// prints Message and exits through isa-debug-exit at once.
	Loop bool
	// ExitCode is written to isa-debug-exit; QEMU then exits with status
	// (ExitCode<<1)|1 (see RawExitStatus). It must be at most 127 so
	// the status fits a process exit status.
	ExitCode uint8
	// Message is printed on COM1 first. Default DefaultRawMessage, or
	// DefaultRawLoopMessage with Loop. It must not contain NUL.
	Message string
	// TicksPerLine is the loop guest's interrupts per tick line (1-255,
	// default 18, about one line a second).
	TicksPerLine int
	// ExitAfter makes the loop guest exit with ExitCode after printing
	// that many tick lines; 0 runs forever.
	ExitAfter int
}

// RawExitStatus is QEMU's exit status when a guest writes code to
// isa-debug-exit.
func RawExitStatus(code uint8) int {
	return int(code)<<1 | 1
}

func (o RawOptions) normalized() (RawOptions, error) {
	if o.Message == "" {
		o.Message = DefaultRawMessage
		if o.Loop {
			o.Message = DefaultRawLoopMessage
		}
	}
	if bytes.IndexByte([]byte(o.Message), 0) >= 0 {
		return o, fmt.Errorf("raw guest message contains NUL")
	}
	if o.ExitCode > 127 {
		return o, fmt.Errorf("raw guest exit code %d: must be at most 127", o.ExitCode)
	}
	if o.TicksPerLine == 0 {
		o.TicksPerLine = 18
	}
	if o.TicksPerLine < 1 || o.TicksPerLine > 255 {
		return o, fmt.Errorf("raw guest ticks per line %d: must be 1-255", o.TicksPerLine)
	}
	if o.ExitAfter < 0 || o.ExitAfter > 0xffff {
		return o, fmt.Errorf("raw guest exit after %d lines: must be 0-65535", o.ExitAfter)
	}
	return o, nil
}

// RawImage returns the 64 KiB -bios image for opts.
func RawImage(opts RawOptions) ([]byte, error) {
	opts, err := opts.normalized()
	if err != nil {
		return nil, err
	}
	a := newAsm16()
	if opts.Loop {
		assembleLoop(a, opts)
	} else {
		assembleHello(a, opts)
	}
	// Strings and subroutines sit after the code.
	a.label("puts")
	assemblePuts(a)
	a.label("msg")
	a.b([]byte(opts.Message)...)
	a.b(0)
	a.label("tickmsg")
	a.b([]byte("KFV-RAW tick ")...)
	a.b(0)

	// Reset vector: the CPU starts at F000:FFF0 in real mode with CS base
	// 0xFFFF0000. A far jump reloads CS with base 0xF0000 (the isa-bios
	// alias), so that interrupt vectors can name segment F000 too.
	if err := a.org(rawResetVector); err != nil {
		return nil, fmt.Errorf("assemble raw guest: %w", err)
	}
	a.b(0xea) // jmp far F000:start
	a.ref("start", abs16, 2)
	a.w(rawSegment)
	if err := a.org(rawImageSize); err != nil {
		return nil, fmt.Errorf("assemble raw guest: %w", err)
	}
	img, err := a.link(0)
	if err != nil {
		return nil, fmt.Errorf("assemble raw guest: %w", err)
	}
	return img, nil
}

// assembleHello: print the message, write the exit code, halt.
func assembleHello(a *asm16, o RawOptions) {
	a.label("start")
	a.b(0xfa)                // cli
	a.b(0x31, 0xc0)          // xor ax, ax
	a.b(0x8e, 0xd0)          // mov ss, ax
	a.b(0xbc)                // mov sp, 0x7000   (RAM for the call below)
	a.w(0x7000)              //
	a.b(0xbe)                // mov si, msg
	a.ref("msg", abs16, 0)   //
	a.b(0xe8)                // call puts
	a.ref("puts", rel16, 0)  //
	a.label("exit")          //
	a.b(0xb0, o.ExitCode)    // mov al, ExitCode
	a.b(0xe6, DebugExitPort) // out 0xf4, al  -> QEMU exits (al<<1)|1
	a.label("halt")          //
	a.b(0xf4)                // hlt (only reached without isa-debug-exit)
	a.b(0xeb)                // jmp halt
	a.ref("halt", rel8, 0)   //
}

// assembleLoop: set up a stack, the PIC and the PIT, print the message,
// then halt with interrupts on; the IRQ0 handler prints tick lines.
func assembleLoop(a *asm16, o RawOptions) {
	a.label("start")
	a.b(0xfa)       // cli
	a.b(0x31, 0xc0) // xor ax, ax
	a.b(0x8e, 0xd0) // mov ss, ax
	a.b(0xbc)       // mov sp, 0x7000
	a.w(0x7000)     //
	a.b(0x8e, 0xd8) // mov ds, ax       (scratch and IVT at segment 0)
	a.b(0xc6, 0x06) // mov byte [rawSubtick], 0
	a.w(rawSubtick) //
	a.b(0)          //
	a.b(0xc7, 0x06) // mov word [rawLines], 0
	a.w(rawLines)   //
	a.w(0)          //
	a.b(0xc7, 0x06) // mov word [8*4], irq0    (IVT entry of vector 8: offset)
	a.w(8 * 4)      //
	a.ref("irq0", abs16, 0)
	a.b(0xc7, 0x06) // mov word [8*4+2], 0xF000   (segment)
	a.w(8*4 + 2)
	a.w(rawSegment)
	// The 8259's output reaches the CPU only through the local APIC's
	// LINT0 pin, masked at reset (firmware normally sets it to ExtINT).
	// With the APIC globally disabled (IA32_APIC_BASE bit 11 clear) the
	// PIC drives INTR directly, under TCG and in KVM's in-kernel APIC.
	a.b(0x66, 0xb9) // mov ecx, 0x1b   (IA32_APIC_BASE)
	a.w(0x1b)
	a.w(0)
	a.b(0x0f, 0x32) // rdmsr
	a.b(0x25)       // and ax, ~0x800 (clear the global enable bit)
	a.w(0xf7ff)     //
	a.b(0x0f, 0x30) // wrmsr
	// 8259 PIC, master only: ICW1 edge+ICW4, ICW2 vector base 8,
	// ICW3 slave on IRQ2, ICW4 8086 mode, then mask all but IRQ0.
	for _, pv := range [][2]byte{{0x20, 0x11}, {0x21, 0x08}, {0x21, 0x04}, {0x21, 0x01}, {0x21, 0xfe}} {
		a.b(0xb0, pv[1]) // mov al, value
		a.b(0xe6, pv[0]) // out port, al
	}
	// 8254 PIT channel 0, mode 2 (rate generator), divisor 0 = 65536:
	// 1193182/65536 = 18.2 Hz.
	for _, pv := range [][2]byte{{0x43, 0x34}, {0x40, 0x00}, {0x40, 0x00}} {
		a.b(0xb0, pv[1]) // mov al, value
		a.b(0xe6, pv[0]) // out port, al
	}
	a.b(0xbe)              // mov si, msg
	a.ref("msg", abs16, 0) //
	a.b(0xe8)              // call puts
	a.ref("puts", rel16, 0)
	a.b(0xfb) // sti
	a.label("idle")
	a.b(0xf4) // hlt   (wakes on each interrupt)
	a.b(0xeb) // jmp idle
	a.ref("idle", rel8, 0)

	a.label("irq0")
	a.b(0x50, 0x53, 0x51, 0x52, 0x56) // push ax, bx, cx, dx, si
	a.b(0xb0, 0x20)                   // mov al, 0x20
	a.b(0xe6, 0x20)                   // out 0x20, al   (EOI to the PIC)
	a.b(0xfe, 0x06)                   // inc byte [rawSubtick]
	a.w(rawSubtick)                   //
	a.b(0x80, 0x3e)                   // cmp byte [rawSubtick], TicksPerLine
	a.w(rawSubtick)                   //
	a.b(byte(o.TicksPerLine))         //
	a.b(0x72)                         // jb iret
	a.ref("iret", rel8, 0)            //
	a.b(0xc6, 0x06)                   // mov byte [rawSubtick], 0
	a.w(rawSubtick)                   //
	a.b(0)                            //
	a.b(0xff, 0x06)                   // inc word [rawLines]
	a.w(rawLines)                     //
	a.b(0xbe)                         // mov si, tickmsg
	a.ref("tickmsg", abs16, 0)        //
	a.b(0xe8)                         // call puts
	a.ref("puts", rel16, 0)           //
	a.b(0x8b, 0x1e)                   // mov bx, [rawLines]
	a.w(rawLines)                     //
	a.b(0xb9)                         // mov cx, 4
	a.w(4)                            //
	a.label("hex")                    //
	a.b(0xc1, 0xc3, 0x04)             // rol bx, 4       (next nibble to the bottom)
	a.b(0x88, 0xd8)                   // mov al, bl
	a.b(0x24, 0x0f)                   // and al, 0x0f
	a.b(0x04, '0')                    // add al, '0'
	a.b(0x3c, '9')                    // cmp al, '9'
	a.b(0x76)                         // jbe digit
	a.ref("digit", rel8, 0)           //
	a.b(0x04, 'a'-'9'-1)              // add al, 'a'-'9'-1
	a.label("digit")                  //
	a.b(0xba)                         // mov dx, COM1
	a.w(COM1)                         //
	a.b(0xee)                         // out dx, al
	a.b(0xe2)                         // loop hex
	a.ref("hex", rel8, 0)             //
	a.b(0xb0, '\n')                   // mov al, '\n'
	a.b(0xee)                         // out dx, al
	if o.ExitAfter > 0 {
		a.b(0x81, 0x3e) // cmp word [rawLines], ExitAfter
		a.w(rawLines)
		a.w(uint16(o.ExitAfter))
		a.b(0x72) // jb iret
		a.ref("iret", rel8, 0)
		a.b(0xb0, o.ExitCode)    // mov al, ExitCode
		a.b(0xe6, DebugExitPort) // out 0xf4, al
	}
	a.label("iret")
	a.b(0x5e, 0x5a, 0x59, 0x5b, 0x58) // pop si, dx, cx, bx, ax
	a.b(0xcf)                         // iret
}

// assemblePuts: write the NUL-terminated string at CS:SI to COM1.
// QEMU's UART transmits whatever is written to THR, initialised or not.
// Clobbers al, dx, si.
func assemblePuts(a *asm16) {
	a.b(0xba) // mov dx, COM1
	a.w(COM1)
	a.label("puts.next")
	a.b(0x2e, 0xac) // cs lodsb
	a.b(0x84, 0xc0) // test al, al
	a.b(0x74)       // jz puts.done
	a.ref("puts.done", rel8, 0)
	a.b(0xee) // out dx, al
	a.b(0xeb) // jmp puts.next
	a.ref("puts.next", rel8, 0)
	a.label("puts.done")
	a.b(0xc3) // ret
}

// BuildRaw writes the raw-code guest image for opts into dir and returns
// its path. The name carries a hash of the content, so images for
// different options live side by side and an existing file is reused.
func BuildRaw(dir string, opts RawOptions) (string, error) {
	img, err := RawImage(opts)
	if err != nil {
		return "", err
	}
	kind := "hello"
	if opts.Loop {
		kind = "loop"
	}
	sum := sha256.Sum256(img)
	path := filepath.Join(dir, fmt.Sprintf("raw-%s-%s.bin", kind, hex.EncodeToString(sum[:6])))
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, img) {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create raw guest dir: %w", err)
	}
	if err := writeFileAtomic(path, img, 0o644); err != nil {
		return "", fmt.Errorf("write raw guest: %w", err)
	}
	return path, nil
}

// RawArgs returns QEMU arguments (without the binary) that boot the raw
// image at path with accel ("kvm" or "tcg"). The serial port is on
// stdio; the caller may append more options (-qmp …) or replace
// "-serial stdio". The chosen machine and CPU are explained in doc.go.
func RawArgs(path, accel string) []string {
	return []string{
		"-accel", accel,
		"-machine", "q35",
		"-cpu", rawCPU(accel),
		"-m", "16",
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-bios", path,
		"-device", fmt.Sprintf("isa-debug-exit,iobase=0x%x,iosize=0x04", DebugExitPort),
		"-serial", "stdio",
	}
}

// rawCPU picks the CPU model; see "Raw-code guests" in doc.go.
func rawCPU(accel string) string {
	if accel == "kvm" {
		// kvm_pvm rejects the IA32_ARCH_CAPABILITIES value QEMU sets
		// for "host" and "max" (failed to set MSR 0x10a, then abort).
		return "host,-arch-capabilities"
	}
	// Without a local APIC, TCG wires the 8259 straight to the CPU;
	// with one, its LINT0 is masked from reset and the loop guest
	// would never see a timer interrupt.
	return "max,-apic"
}

// writeFileAtomic writes data to a temporary file beside path and renames
// it into place, so that readers never see a partial file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	if err := os.Chmod(tmp, perm); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return nil
}
