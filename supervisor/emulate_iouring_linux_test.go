//go:build linux

package supervisor

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/orch"
	"kfv/profiles"
)

// ringMatrixEnv makes the test binary run the io_uring_setup matrix in
// DIR and write its results there, instead of running tests.
const ringMatrixEnv = "KFV_TEST_RING_MATRIX"

// ringResult is what one io_uring_setup of the matrix observed.
type ringResult struct {
	Name   string `json:"name"`
	FD     int    `json:"fd"` // distance from the lowest free fd
	Errno  string `json:"errno"`
	Cloexe int    `json:"cloexec"`
	Params string `json:"params"` // the 120 bytes the caller got, hex
	Ops    string `json:"ops"`    // QEMU's operations on the ring
	// Foreign is what IORING_OP_OPENAT gets on the ring: it differs by
	// design (native: an fd; kfv: -EACCES), so it is compared apart.
	Foreign string `json:"foreign"`
}

// ringParams is struct io_uring_params.
type ringParams [120]byte

func (p *ringParams) u32(off int) uint32      { return binary.NativeEndian.Uint32(p[off:]) }
func (p *ringParams) put32(off int, v uint32) { binary.NativeEndian.PutUint32(p[off:], v) }
func ringSetup(entries uint32, p unsafe.Pointer) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(p), 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

// ringSubmit maps the ring, submits one SQE and returns its CQE's res.
func ringSubmit(fd int, p *ringParams, op uint8, sfd int32, addr uint64, length uint32) (int32, error) {
	sqe128 := p.u32(8)&(1<<10) != 0
	sqeSize := 64
	if sqe128 {
		sqeSize = 128
	}
	cqeSize := 16
	if p.u32(8)&(1<<11) != 0 {
		cqeSize = 32
	}
	ringSize := max(int(p.u32(40+24))+int(p.u32(0))*4, int(p.u32(80+20))+int(p.u32(4))*cqeSize)
	ring, err := unix.Mmap(fd, 0, ringSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(ring)
	sqes, err := unix.Mmap(fd, 0x10000000, int(p.u32(0))*sqeSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(sqes)
	at := func(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&ring[off])) }
	tail := atomic.LoadUint32(at(p.u32(40 + 4)))
	idx := tail & atomic.LoadUint32(at(p.u32(40+8)))
	s := sqes[int(idx)*sqeSize:]
	clear(s[:sqeSize])
	s[0] = op
	binary.NativeEndian.PutUint32(s[4:], uint32(sfd))
	binary.NativeEndian.PutUint64(s[16:], addr)
	binary.NativeEndian.PutUint32(s[24:], length)
	*at(p.u32(40+24) + idx*4) = idx
	atomic.StoreUint32(at(p.u32(40+4)), tail+1)
	// IORING_ENTER_GETEVENTS, and on an SQPOLL ring IORING_ENTER_SQ_WAKEUP:
	// its kernel thread sleeps once idle for sq_thread_idle (a second by
	// default), and then would never see the SQE on a loaded machine.
	enter := uintptr(1)
	if p.u32(8)&(1<<1) != 0 {
		enter |= 2
	}
	if _, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), 1, 1, enter, 0, 0); e != 0 {
		return 0, e
	}
	head := atomic.LoadUint32(at(p.u32(80 + 0)))
	if head == atomic.LoadUint32(at(p.u32(80+4))) {
		return 0, fmt.Errorf("no CQE")
	}
	c := ring[p.u32(80+20)+(head&atomic.LoadUint32(at(p.u32(80+8))))*uint32(cqeSize):]
	atomic.StoreUint32(at(p.u32(80+0)), head+1)
	return int32(binary.NativeEndian.Uint32(c[8:])), nil
}

// runRingMatrix makes every io_uring_setup of the matrix from this
// process and writes the results to dir/rings.json. It runs natively and
// under the supervisor, which performs each call; the test compares.
func runRingMatrix(dir string) {
	var res []ringResult
	secret, _ := unix.BytePtrFromString(filepath.Join(dir, "secret"))
	do := func(name string, entries uint32, p *ringParams, null bool) {
		lowest, _ := unix.Dup(0)
		unix.Close(lowest)
		ptr := unsafe.Pointer(p)
		if null {
			ptr = nil
		}
		fd, err := ringSetup(entries, ptr)
		r := ringResult{Name: name}
		if err != nil {
			r.Errno = unix.ErrnoName(err.(unix.Errno))
			res = append(res, r)
			return
		}
		r.FD = fd - lowest
		r.Cloexe, _ = unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		r.Params = hex.EncodeToString(p[:])
		var pipe [2]int
		unix.Pipe2(pipe[:], unix.O_CLOEXEC)
		buf := []byte("kfv-ring")
		iov := unix.Iovec{Base: &buf[0]}
		iov.SetLen(len(buf))
		w, werr := ringSubmit(fd, p, 2, int32(pipe[1]), uint64(uintptr(unsafe.Pointer(&iov))), 1)  // WRITEV
		rd, rerr := ringSubmit(fd, p, 1, int32(pipe[0]), uint64(uintptr(unsafe.Pointer(&iov))), 1) // READV
		r.Ops = fmt.Sprintf("writev=%d(%v) readv=%d(%v) %q", w, werr, rd, rerr, buf)
		o, oerr := ringSubmit(fd, p, 18, unix.AT_FDCWD, uint64(uintptr(unsafe.Pointer(secret))), 0) // OPENAT
		switch {
		case oerr != nil:
			r.Foreign = oerr.Error()
		case o >= 0:
			r.Foreign = "opened"
			unix.Close(int(o))
		default:
			r.Foreign = unix.ErrnoName(unix.Errno(-o))
		}
		unix.Close(pipe[0])
		unix.Close(pipe[1])
		unix.Close(fd)
		res = append(res, r)
	}
	params := func(flags, cq uint32) *ringParams {
		var p ringParams
		p.put32(8, flags)
		p.put32(4, cq)
		return &p
	}
	do("QEMU's ring", 128, params(0, 0), false)
	do("cq size", 64, params(1<<3, 512), false)
	do("big SQEs and CQEs", 32, params(1<<10|1<<11, 0), false)
	do("batching flags", 16, params(1<<7|1<<8|1<<9, 0), false)
	do("entries not a power of two", 100, params(0, 0), false)
	do("entries 0", 0, params(0, 0), false)
	reserved := params(0, 0)
	reserved.put32(28, 1)
	do("reserved field set", 8, reserved, false)
	do("params at NULL", 8, nil, true)
	do("unknown flag", 8, params(1<<30, 0), false)
	// By design, not as natively (compared apart): kfv makes no SQPOLL
	// ring and no ring over its size cap.
	do("sqpoll", 8, params(1<<1, 0), false)
	do("over kfv's cap", 8192, params(0, 0), false)
	do("over kfv's cap, clamped", 100000, params(1<<4, 0), false)
	b, _ := json.Marshal(res)
	if err := os.WriteFile(filepath.Join(dir, "rings.json"), b, 0o600); err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
}

// TestEmulatedRingFidelity runs the io_uring_setup matrix natively and
// under the supervisor, which makes every ring itself: fd numbers,
// close-on-exec, the params written back, errnos and QEMU's operations on
// the ring are the same; only IORING_OP_OPENAT differs, opened natively
// and refused with EACCES by the kernel on kfv's ring.
func TestEmulatedRingFidelity(t *testing.T) {
	var probe [120]byte
	if fd, err := ringSetup(8, unsafe.Pointer(&probe)); err != nil {
		t.Skipf("io_uring_setup: %v (kernel without io_uring, or io_uring_disabled)", err)
	} else {
		unix.Close(fd)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dirs := [2]string{t.TempDir(), t.TempDir()}
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "secret"), []byte("s"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), ringMatrixEnv+"="+dirs[0])
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("native matrix: %v\n%s", err, out)
	}
	allow := funcDecider(func(*orch.Request) orch.Decision {
		return orch.Decision{Action: profiles.VerdictAllow, Rule: "all"}
	})
	t.Setenv(ringMatrixEnv, dirs[1])
	status, evs, err := runSupervised(t, inspectProfile("io_uring_setup"), allow, Enforce, exe)
	if err != nil || status != 0 {
		t.Fatalf("emulated matrix exited %d: %v\n%s", status, err, eventLines(evs))
	}
	var rn, re []ringResult
	for i, out := range []*[]ringResult{&rn, &re} {
		b, err := os.ReadFile(filepath.Join(dirs[i], "rings.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatal(err)
		}
	}
	if len(rn) != len(re) {
		t.Fatalf("%d native results, %d emulated", len(rn), len(re))
	}
	// The last three cases differ by design.
	byDesign := map[string]func(n, e ringResult) string{
		"sqpoll": func(n, e ringResult) string {
			return check(n.Errno == "" && e.Errno == "EINVAL", "SQPOLL made natively, refused with EINVAL by kfv")
		},
		"over kfv's cap": func(n, e ringResult) string {
			return check(n.Errno == "" && e.Errno == "EINVAL", "8192 entries made natively, refused with EINVAL by kfv")
		},
		"over kfv's cap, clamped": func(n, e ringResult) string {
			var pn, pe ringParams
			hex.Decode(pn[:], []byte(n.Params))
			hex.Decode(pe[:], []byte(e.Params))
			return check(n.Errno == "" && e.Errno == "" && pn.u32(0) == 32768 && pe.u32(0) == 4096,
				"clamped to the kernel's 32768 entries natively, to kfv's 4096 under kfv")
		},
	}
	for i := range rn {
		n, e := rn[i], re[i]
		if f := byDesign[n.Name]; f != nil {
			if why := f(n, e); why != "" {
				t.Errorf("%s: want %s\n native   %+v\n emulated %+v", n.Name, why, n, e)
			}
			continue
		}
		wantForeign := n.Foreign
		if n.Foreign == "opened" {
			wantForeign = "EACCES"
		}
		if e.Foreign != wantForeign {
			t.Errorf("%s: IORING_OP_OPENAT %s natively, %s under kfv; want %s", n.Name, n.Foreign, e.Foreign, wantForeign)
		}
		n.Foreign, e.Foreign = "", ""
		if !reflect.DeepEqual(n, e) {
			t.Errorf("%s:\n native   %+v\n emulated %+v", n.Name, n, e)
		}
	}
	made := 0
	for _, e := range evs {
		if e.Kind == event.KindDecision && e.Syscall == "io_uring_setup" && strings.Contains(e.Detail, "ring made by kfv") {
			made++
		}
	}
	if made != 6 {
		t.Errorf("%d rings made by kfv in the events, want 6 (the matrix's successful setups)\n%s", made, eventLines(evs))
	}
}

// check returns want unless ok.
func check(ok bool, want string) string {
	if ok {
		return ""
	}
	return want
}
