package profiles

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"kfv/sysent"
)

func TestTablesSortedAndUnique(t *testing.T) {
	tables := []struct {
		name  string
		table []nameValue
	}{
		{"syscalls", syscallTable},
		{"errnos", errnoTable},
		{"constants", constTable},
		{"ioctls", ioctlTable},
	}
	for _, tt := range tables {
		t.Run(tt.name, func(t *testing.T) {
			if runtime.GOARCH == "amd64" && len(tt.table) == 0 {
				t.Fatal("empty table")
			}
			for i := 1; i < len(tt.table); i++ {
				if tt.table[i-1].name >= tt.table[i].name {
					t.Errorf("%q before %q: table not sorted or name repeated", tt.table[i-1].name, tt.table[i].name)
				}
			}
		})
	}
	t.Run("constants and ioctls disjoint", func(t *testing.T) {
		for _, nv := range ioctlTable {
			if _, ok := lookup(constTable, nv.name); ok {
				t.Errorf("%s is in both tables", nv.name)
			}
		}
	})
}

func TestNamesResolve(t *testing.T) {
	for _, n := range ConstantNames() {
		if _, ok := Constant(n); !ok {
			t.Errorf("Constant(%q) not found", n)
		}
		if _, err := parseNumber(n); err != nil {
			t.Errorf("parseNumber(%q): %v", n, err)
		}
	}
	for _, nv := range errnoTable {
		if n, ok := ErrnoNumber(nv.name); !ok || n < 1 || n > 4095 {
			t.Errorf("ErrnoNumber(%q) = %d, %v", nv.name, n, ok)
		}
	}
	for _, n := range SyscallNames() {
		if _, ok := SyscallNumber(n); !ok {
			t.Errorf("SyscallNumber(%q) not found", n)
		}
	}
	// Every syscall kfv's table describes is one the filter can name.
	for _, e := range sysent.Entries() {
		if _, ok := SyscallNumber(e.Name); !ok {
			t.Errorf("sysent: unknown syscall %q", e.Name)
		}
	}
}

func TestKnownValues(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the tables are x86_64 only")
	}
	tests := []struct {
		name string
		got  func() (int64, bool)
		want int64
	}{
		{"read", func() (int64, bool) { n, ok := SyscallNumber("read"); return int64(n), ok }, 0},
		{"openat", func() (int64, bool) { n, ok := SyscallNumber("openat"); return int64(n), ok }, 257},
		{"clone3", func() (int64, bool) { n, ok := SyscallNumber("clone3"); return int64(n), ok }, 435},
		{"EPERM", func() (int64, bool) { n, ok := ErrnoNumber("EPERM"); return int64(n), ok }, 1},
		{"EWOULDBLOCK", func() (int64, bool) { n, ok := ErrnoNumber("EWOULDBLOCK"); return int64(n), ok }, 11},
		{"KVM_RUN", func() (int64, bool) { return Constant("KVM_RUN") }, 0xae80},
		{"KVM_IRQ_LINE_STATUS", func() (int64, bool) { return Constant("KVM_IRQ_LINE_STATUS") }, 0xc008ae67},
		{"KVM_SET_USER_MEMORY_REGION", func() (int64, bool) { return Constant("KVM_SET_USER_MEMORY_REGION") }, 0x4020ae46},
		{"PROT_EXEC", func() (int64, bool) { return Constant("PROT_EXEC") }, 4},
		{"CLONE_THREAD", func() (int64, bool) { return Constant("CLONE_THREAD") }, 0x10000},
		{"AT_FDCWD", func() (int64, bool) { return Constant("AT_FDCWD") }, -100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.got()
			if !ok || got != tt.want {
				t.Errorf("got %#x, %v; want %#x", got, ok, tt.want)
			}
		})
	}
}

func TestParseNumber(t *testing.T) {
	tests := []struct {
		in      string
		want    uint64
		wantErr string
	}{
		{"0", 0, ""},
		{"0x10", 16, ""},
		{"-100", 0xffffffffffffff9c, ""},
		{"PROT_READ|PROT_WRITE", 3, ""},
		{"CLONE_VM | CLONE_THREAD | 0x1", 0x10101, ""},
		{"0xffffffffffffffff", 0xffffffffffffffff, ""},
		{"", 0, "empty value"},
		{"PROT_READ|", 0, `empty term in "PROT_READ|"`},
		{"NOPE", 0, `unknown constant "NOPE"`},
		{"0xg", 0, `bad number "0xg"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseNumber(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Errorf("parseNumber(%q) error = %v, want %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("parseNumber(%q) = %#x, %v; want %#x", tt.in, got, err, tt.want)
			}
		})
	}
}

// cHeaders declare every constant the tables hold.
const cHeaders = `#define _GNU_SOURCE
#include <stdio.h>
#include <fcntl.h>
#include <signal.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <linux/kvm.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <linux/fs.h>
#include <linux/fiemap.h>
#include <linux/cdrom.h>
#include <linux/vhost.h>
#include <linux/vfio.h>
#if __has_include(<xfs/xfs_fs.h>)
#include <xfs/xfs_fs.h>
#else
/* xfsprogs' header (xfslibs-dev) is not installed: XFS_IOC_DIOINFO as it
   defines it, on its struct dioattr of three 32-bit fields. */
struct dioattr { unsigned int d_mem, d_miniosz, d_maxiosz; };
#define XFS_IOC_DIOINFO _IOR('X', 30, struct dioattr)
#endif
`

// TestConstantsMatchKernelHeaders compiles a C program that prints every
// constant the tables hold, as the system's headers define it, and
// compares. It needs gcc and the kernel headers (linux-libc-dev).
func TestConstantsMatchKernelHeaders(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the tables are x86_64 only")
	}
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not in PATH: install gcc and linux-libc-dev to check the constant tables against the C headers")
	}
	if _, err := os.Stat("/usr/include/linux/kvm.h"); err != nil {
		t.Skip("/usr/include/linux/kvm.h missing: install linux-libc-dev to check the constant tables")
	}
	var src bytes.Buffer
	src.WriteString(cHeaders)
	src.WriteString("int main(void) {\n")
	all := append(append([]nameValue{}, constTable...), ioctlTable...)
	for _, nv := range all {
		src.WriteString("#ifdef " + nv.name + "\n")
		src.WriteString("printf(\"%s %lld\\n\", \"" + nv.name + "\", (long long)(" + nv.name + "));\n")
		src.WriteString("#else\nprintf(\"%s undefined\\n\", \"" + nv.name + "\");\n#endif\n")
	}
	src.WriteString("return 0;\n}\n")
	dir := t.TempDir()
	cfile := filepath.Join(dir, "consts.c")
	if err := os.WriteFile(cfile, src.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "consts")
	if out, err := exec.Command(gcc, "-o", bin, cfile).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	c := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		name, val, _ := strings.Cut(sc.Text(), " ")
		c[name] = val
	}
	for _, nv := range all {
		v := c[nv.name]
		if v == "undefined" {
			t.Errorf("%s: not defined by the C headers", nv.name)
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Errorf("%s: C printed %q", nv.name, v)
			continue
		}
		// Some macros are int in C: compare the 32-bit patterns too.
		if n != nv.value && uint32(n) != uint32(nv.value) {
			t.Errorf("%s = %#x, C headers say %#x", nv.name, nv.value, n)
		}
	}
}
