//go:build linux

package seccompnotify

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// testRing is a ring mapped in the test process, driven with raw SQEs.
type testRing struct {
	fd       int
	sq, sqes []byte
	p        ringParams
}

func mapTestRing(t *testing.T, fd int, p ringParams) *testRing {
	t.Helper()
	w := p.word
	sqEntries, cqEntries := w(0), w(4)
	sqSize := int(w(40+24)) + int(sqEntries)*4 // sq_off.array + entries
	cqSize := int(w(80+20)) + int(cqEntries)*16
	if cqSize > sqSize {
		sqSize = cqSize // IORING_FEAT_SINGLE_MMAP: one mapping for both
	}
	sq, err := unix.Mmap(fd, 0, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		t.Fatalf("mmap the rings: %v", err)
	}
	sqes, err := unix.Mmap(fd, 0x10000000, int(sqEntries)*64, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		t.Fatalf("mmap the SQEs: %v", err)
	}
	t.Cleanup(func() { unix.Munmap(sq); unix.Munmap(sqes) })
	return &testRing{fd: fd, sq: sq, sqes: sqes, p: p}
}

func (r *testRing) u32(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&r.sq[off])) }

// submit submits one SQE (opcode, flags, fd, addr, len, off) and returns
// its CQE's res.
func (r *testRing) submit(t *testing.T, op, flags uint8, fd int32, addr uint64, length uint32, off uint64) int32 {
	t.Helper()
	w := r.p.word
	tail := atomic.LoadUint32(r.u32(w(40 + 4)))
	mask := atomic.LoadUint32(r.u32(w(40 + 8)))
	idx := tail & mask
	sqe := r.sqes[idx*64 : idx*64+64]
	clear(sqe)
	sqe[0], sqe[1] = op, flags
	binary.NativeEndian.PutUint32(sqe[4:], uint32(fd))
	binary.NativeEndian.PutUint64(sqe[8:], off)
	binary.NativeEndian.PutUint64(sqe[16:], addr)
	binary.NativeEndian.PutUint32(sqe[24:], length)
	binary.NativeEndian.PutUint64(sqe[32:], 0x6b6676) // user_data
	*r.u32(w(40+24) + idx*4) = idx
	atomic.StoreUint32(r.u32(w(40+4)), tail+1)
	const enterGetEvents = 1
	if _, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 1, 1, enterGetEvents, 0, 0); e != 0 {
		t.Fatalf("io_uring_enter: %v", e)
	}
	head := atomic.LoadUint32(r.u32(w(80 + 0)))
	if head == atomic.LoadUint32(r.u32(w(80+4))) {
		t.Fatal("no CQE after io_uring_enter with min_complete 1")
	}
	cqe := r.sq[w(80+20)+(head&atomic.LoadUint32(r.u32(w(80+8))))*16:]
	res := int32(binary.NativeEndian.Uint32(cqe[8:]))
	atomic.StoreUint32(r.u32(w(80+0)), head+1)
	return res
}

const (
	opNop, opReadv, opWritev, opOpenat, opSocket, opConnect = 0, 1, 2, 18, 45, 16
	sqeAsync                                                = 1 << 4 // IOSQE_ASYNC
)

// TestRestrictedRingInTheKernel makes a ring as kfv makes it for QEMU and
// one natively, with the same parameters: the params the caller gets are
// the same bytes, QEMU's operations work on both, and the others
// (IORING_OP_OPENAT, SOCKET, CONNECT, even NOP), any SQE flag and any
// register opcode are refused with EACCES on kfv's ring only.
func TestRestrictedRingInTheKernel(t *testing.T) {
	var native ringParams
	nfd, e := ioUringSetup(128, &native)
	if e != 0 {
		t.Skipf("io_uring_setup: %v (kernel without io_uring, or io_uring_disabled)", e)
	}
	defer unix.Close(nfd)
	var p ringParams
	fd, e := makeRing(128, &p)
	if e != 0 {
		t.Fatalf("makeRing: %v", e)
	}
	defer fd.Close()
	if p.flags() != ioringSetupRDisabled {
		t.Errorf("kernel wrote flags %#x, want R_DISABLED only", p.flags())
	}
	p.setFlags(0) // as performIOURing writes it back
	if p != native {
		t.Errorf("params differ from a native ring's:\n kfv    %x\n native %x", p[:], native[:])
	}

	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	path, _ := unix.BytePtrFromString(secret)
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	buf := make([]byte, 8)
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	data := []byte("kfv-ring")
	wiov := unix.Iovec{Base: &data[0]}
	wiov.SetLen(len(data))
	iovAddr, wiovAddr := uint64(uintptr(unsafe.Pointer(&iov))), uint64(uintptr(unsafe.Pointer(&wiov)))

	kr, nr := mapTestRing(t, int(fd), p), mapTestRing(t, nfd, native)
	eacces := -int32(unix.EACCES)
	for _, r := range []struct {
		name string
		ring *testRing
	}{{"kfv", kr}, {"native", nr}} {
		t.Run(r.name, func(t *testing.T) {
			if res := r.ring.submit(t, opWritev, 0, int32(fds[1]), wiovAddr, 1, 0); res != int32(len(data)) {
				t.Errorf("writev: res %d, want %d", res, len(data))
			}
			if res := r.ring.submit(t, opReadv, 0, int32(fds[0]), iovAddr, 1, 0); res != int32(len(data)) || string(buf) != string(data) {
				t.Errorf("readv: res %d, read %q", res, buf)
			}
			res := r.ring.submit(t, opOpenat, 0, unix.AT_FDCWD, uint64(uintptr(unsafe.Pointer(path))), 0, 0)
			if r.ring == kr {
				if res != eacces {
					t.Errorf("openat on kfv's ring: res %d, want -EACCES", res)
				}
				for _, c := range []struct {
					name      string
					op, flags uint8
				}{{"nop", opNop, 0}, {"socket", opSocket, 0}, {"connect", opConnect, 0}, {"readv with IOSQE_ASYNC", opReadv, sqeAsync}} {
					// socket: fd is the domain, off the type.
					if res := r.ring.submit(t, c.op, c.flags, unix.AF_INET, iovAddr, 1, unix.SOCK_STREAM); res != eacces {
						t.Errorf("%s on kfv's ring: res %d, want -EACCES", c.name, res)
					}
				}
				const registerProbe = 8
				if e := ioUringRegister(int(fd), registerProbe, make([]byte, 16+256*8), 256); !errors.Is(e, unix.EACCES) {
					t.Errorf("io_uring_register(IORING_REGISTER_PROBE) on kfv's ring: %v, want EACCES", e)
				}
				return
			}
			// The same open natively proves that the refusal is the
			// restriction's, not this kernel's.
			if res < 0 {
				t.Fatalf("openat on a native ring: res %d", res)
			}
			unix.Close(int(res))
			if res := r.ring.submit(t, opSocket, 0, unix.AF_INET, 0, 0, unix.SOCK_STREAM); res < 0 {
				t.Errorf("socket on a native ring: res %d", res)
			} else {
				unix.Close(int(res))
			}
		})
	}
}

// TestLiveRings counts the rings of this process.
func TestLiveRings(t *testing.T) {
	before, err := liveRings(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var p ringParams
	fd, e := makeRing(8, &p)
	if e != 0 {
		t.Skipf("io_uring_setup: %v", e)
	}
	after, err := liveRings(os.Getpid())
	fd.Close()
	if err != nil || after != before+1 {
		t.Errorf("liveRings: %d before, %d after making one (%v)", before, after, err)
	}
}
