//go:build linux

package seccompnotify

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

const pageSize = 4096

// ErrTooLong is returned when a string in the caller's memory has no NUL
// within the limit.
var ErrTooLong = errors.New("string in caller memory exceeds limit")

// ReadMem copies len(buf) bytes at addr in process pid into buf with
// process_vm_readv. It reads nothing more: no /proc/PID/mem is opened.
// The caller must check the notification's validity afterwards.
func ReadMem(pid int, addr uint64, buf []byte) error {
	return vmCopy(pid, addr, buf, unix.ProcessVMReadv, "process_vm_readv")
}

// WriteMem copies buf to addr in process pid with process_vm_writev: how
// a performed call hands back what the kernel would have written into
// the caller's memory (sendmmsg's msg_len).
func WriteMem(pid int, addr uint64, buf []byte) error {
	return vmCopy(pid, addr, buf, unix.ProcessVMWritev, "process_vm_writev")
}

func vmCopy(pid int, addr uint64, buf []byte, op func(int, []unix.Iovec, []unix.RemoteIovec, uint) (int, error), name string) error {
	if len(buf) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(buf)}}
	n, err := op(pid, local, remote, 0)
	if err != nil {
		return os.NewSyscallError(name, err)
	}
	if n != len(buf) {
		return fmt.Errorf("%s: %d of %d bytes at %#x", name, n, len(buf), addr)
	}
	return nil
}

// ReadString reads a NUL-terminated string at addr in process pid, at most
// max bytes long (without the NUL). It reads page by page so that a string
// ending just before an unmapped page is still read.
func ReadString(pid int, addr uint64, max int) (string, error) {
	if addr == 0 {
		return "", fmt.Errorf("read string: NULL pointer")
	}
	var out []byte
	var page [pageSize]byte
	for len(out) <= max {
		n := pageSize - int(addr%pageSize)
		if err := ReadMem(pid, addr, page[:n]); err != nil {
			return "", err
		}
		if i := bytes.IndexByte(page[:n], 0); i >= 0 {
			out = append(out, page[:i]...)
			if len(out) > max {
				break
			}
			return string(out), nil
		}
		out = append(out, page[:n]...)
		addr += uint64(n)
	}
	return "", ErrTooLong
}
