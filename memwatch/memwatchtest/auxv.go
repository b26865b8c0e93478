package memwatchtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// EntryPoint returns the run-time address of pid's ELF entry point
// (AT_ENTRY in /proc/PID/auxv; Linux only). QEMU runs its entry point,
// _start, once before main and never again, so a byte there can be
// changed to test memwatch without disturbing the VM.
func EntryPoint(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/auxv", pid))
	if err != nil {
		return 0, fmt.Errorf("read auxv: %w", err)
	}
	return auxvEntry(b)
}

// auxvEntry finds AT_ENTRY in the bytes of an x86-64 auxiliary vector.
func auxvEntry(b []byte) (uint64, error) {
	const atEntry = 9
	for ; len(b) >= 16; b = b[16:] {
		k, v := binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])
		if k == atEntry {
			return v, nil
		}
		if k == 0 {
			break
		}
	}
	return 0, errors.New("auxv: no AT_ENTRY")
}
