//go:build linux && !amd64

package memwatch

import "fmt"

var syscallInsn = []byte{}

// inject is implemented for x86-64 only.
func (fz *frozen) inject(t *task, insn uint64, nr uintptr, args ...uint64) (uint64, error) {
	return 0, fmt.Errorf("inject into %d: %w", t.tid, ErrUnsupported)
}
