//go:build linux

package seccompnotify

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"kfv/orch"
	"kfv/sysent"
)

// io_uring, made by kfv. A ring's submissions never pass through seccomp:
// an IORING_OP_OPENAT or IORING_OP_CONNECT on a ring QEMU made itself
// would open or connect whatever a payload asks. So kfv makes every ring
// QEMU gets. On QEMU's io_uring_setup it reads the caller's
// io_uring_params, creates the ring itself with the caller's flags plus
// IORING_SETUP_R_DISABLED, registers IORING_REGISTER_RESTRICTIONS (the
// SQE opcodes of ringOps, no SQE flags, no register opcode), enables it,
// writes the params back into the caller (with the flags the caller
// passed) and installs the ring with ADDFD as the call's result. The
// kernel then refuses, with EACCES in the CQE, every other operation
// submitted on that ring, whoever submits it: the list is enforced where
// the operation runs, not where kfv could see it. A plain ring (no
// SQPOLL) runs each submission in the submitter's context (its fd table,
// credentials and memory; its io-wq workers are the submitter's threads),
// so QEMU's I/O on kfv's ring is QEMU's own. docs/io_uring.md has the
// design and what was measured.

func init() {
	register(sysent.PerformIOURing, performer{perform: performIOURing})
}

// The io_uring ABI (<linux/io_uring.h>) that kfv needs.
const (
	ioringSetupIOPoll           = 1 << 0
	ioringSetupSQPoll           = 1 << 1
	ioringSetupSQAff            = 1 << 2
	ioringSetupCQSize           = 1 << 3
	ioringSetupClamp            = 1 << 4
	ioringSetupAttachWQ         = 1 << 5
	ioringSetupRDisabled        = 1 << 6
	ioringSetupSubmitAll        = 1 << 7
	ioringSetupCoopTaskrun      = 1 << 8
	ioringSetupTaskrunFlag      = 1 << 9
	ioringSetupSQE128           = 1 << 10
	ioringSetupCQE32            = 1 << 11
	ioringSetupSingleIssuer     = 1 << 12
	ioringSetupDeferTaskrun     = 1 << 13
	ioringSetupNoMmap           = 1 << 14
	ioringSetupRegisteredFDOnly = 1 << 15
	ioringSetupNoSQArray        = 1 << 16

	ioringRegisterRestrictions = 11
	ioringRegisterEnableRings  = 12

	ioringRestrictionSQEOp = 1

	ringParamsSize      = 120 // sizeof(struct io_uring_params)
	ringRestrictionSize = 16  // sizeof(struct io_uring_restriction)
)

// ringFlagsAdmitted are the setup flags kfv passes on: they size the
// rings, batch completions or change the SQE and CQE sizes, and mean the
// same whoever creates the ring.
const ringFlagsAdmitted = ioringSetupCQSize | ioringSetupClamp | ioringSetupSubmitAll |
	ioringSetupCoopTaskrun | ioringSetupTaskrunFlag | ioringSetupSQE128 | ioringSetupCQE32 |
	ioringSetupNoSQArray

// ringFlagsRefused says why each refused setup flag is refused. Any flag
// not admitted and not listed here is unknown to kfv and refused too.
var ringFlagsRefused = []struct {
	flag uint32
	why  string
}{
	{ioringSetupSQPoll, "SQPOLL: the kernel's polling thread would be kfv's, and submit with kfv's files and credentials"},
	{ioringSetupSQAff, "SQ_AFF: only with SQPOLL"},
	{ioringSetupAttachWQ, "ATTACH_WQ: wq_fd is a number in the caller's fd table, not kfv's"},
	{ioringSetupRDisabled, "R_DISABLED: the caller would enable, and could restrict, the ring itself"},
	{ioringSetupIOPoll, "IOPOLL: polled I/O on O_DIRECT block devices, which QEMU does not use"},
	{ioringSetupSingleIssuer, "SINGLE_ISSUER: the enabling task, kfv, would become the only submitter"},
	{ioringSetupDeferTaskrun, "DEFER_TASKRUN: needs SINGLE_ISSUER"},
	{ioringSetupNoMmap, "NO_MMAP: the rings would live in memory the caller provides"},
	{ioringSetupRegisteredFDOnly, "REGISTERED_FD_ONLY: the ring would need a register operation"},
}

// ringOp is one SQE opcode a ring kfv makes admits.
type ringOp struct {
	op   uint8
	name string
}

// ringOps are the SQE opcodes of QEMU 7.2's and 10.0's io_uring users:
// block/io_uring.c submits READV, WRITEV (writev2 is WRITEV with
// RWF_DSYNC) and FSYNC; util/fdmon-io_uring.c (the AioContext's fd
// monitor) POLL_ADD, POLL_REMOVE and TIMEOUT. Each acts only on fds the
// submitter already holds, as the readv, writev, fsync and ppoll QEMU may
// call anyway. Neither registers buffers, files or anything else, and
// neither sets an SQE flag, so the ring admits no register opcode and no
// SQE flag.
var ringOps = []ringOp{
	{1, "readv"}, {2, "writev"}, {3, "fsync"},
	{6, "poll_add"}, {7, "poll_remove"}, {11, "timeout"},
}

// ringOpNames lists the SQE opcodes kfv's rings admit, for messages and
// tests.
func ringOpNames() []string {
	n := make([]string, len(ringOps))
	for i, o := range ringOps {
		n[i] = o.name
	}
	return n
}

// Caps on what one VM makes kfv create. A ring's memory (its SQ and CQ
// rings and SQE array) is allocated by the task that creates it and
// charged to that task's memory cgroup, at setup: kfv's. QEMU asks for
// 128 entries per ring (block/io_uring.c and util/fdmon-io_uring.c); the
// kernel would take 32768 (about 4 MiB a ring). kfv takes at most
// maxRingEntries (cq at most twice that) and keeps at most maxLiveRings
// ring fds in QEMU at once, so that a payload looping on io_uring_setup
// cannot make kfv allocate more than about 50 MiB.
const (
	maxRingEntries = 4096
	maxLiveRings   = 128
)

// ringParams is struct io_uring_params, as the kernel reads and writes it.
type ringParams [ringParamsSize]byte

func (p *ringParams) word(off int) uint32 { return binary.NativeEndian.Uint32(p[off:]) }
func (p *ringParams) setWord(off int, v uint32) {
	binary.NativeEndian.PutUint32(p[off:], v)
}

func (p *ringParams) flags() uint32     { return p.word(8) }
func (p *ringParams) setFlags(f uint32) { p.setWord(8, f) }
func (p *ringParams) cqEntries() uint32 { return p.word(4) }

// ringFlagsProblem says why a ring with these setup flags is refused, or
// "" when kfv makes it.
func ringFlagsProblem(flags uint32) string {
	var why []string
	for _, r := range ringFlagsRefused {
		if flags&r.flag != 0 {
			why = append(why, r.why)
			flags &^= r.flag
		}
	}
	if rest := flags &^ ringFlagsAdmitted; rest != 0 {
		why = append(why, fmt.Sprintf("flags %#x unknown to kfv", rest))
	}
	return strings.Join(why, "; ")
}

// ringEntries checks the ring size asked for against kfv's caps, as the
// kernel checks it against its own: over the cap it is refused, or cut to
// the cap with IORING_SETUP_CLAMP. p's cq_entries is cut the same way.
func ringEntries(entries uint32, p *ringParams) (uint32, string) {
	clamp := p.flags()&ioringSetupClamp != 0
	if entries > maxRingEntries {
		if !clamp {
			return 0, fmt.Sprintf("%d entries: kfv makes rings of at most %d", entries, maxRingEntries)
		}
		entries = maxRingEntries
	}
	if p.flags()&ioringSetupCQSize != 0 && p.cqEntries() > 2*maxRingEntries {
		if !clamp {
			return 0, fmt.Sprintf("%d CQ entries: kfv makes rings of at most %d", p.cqEntries(), 2*maxRingEntries)
		}
		p.setWord(4, 2*maxRingEntries)
	}
	return entries, ""
}

// admitRing checks a setup's flags and sizes against what kfv makes and
// returns the entries to make the ring with, or why it is refused
// (EINVAL, as a kernel that does not know a flag or takes fewer entries
// answers).
func admitRing(entries uint32, p *ringParams) (uint32, string) {
	if why := ringFlagsProblem(p.flags()); why != "" {
		return 0, why
	}
	return ringEntries(entries, p)
}

// ringRestrictions is the IORING_REGISTER_RESTRICTIONS array: one
// IORING_RESTRICTION_SQE_OP per admitted opcode. Without an
// IORING_RESTRICTION_SQE_FLAGS_ALLOWED entry no SQE flag is admitted, and
// without an IORING_RESTRICTION_REGISTER_OP entry no register opcode.
func ringRestrictions() []byte {
	b := make([]byte, len(ringOps)*ringRestrictionSize)
	for i, o := range ringOps {
		r := b[i*ringRestrictionSize:]
		binary.NativeEndian.PutUint16(r[0:], ioringRestrictionSQEOp)
		r[2] = o.op
	}
	return b
}

// ringDetail says what kfv made, for the decision's event.
func ringDetail(entries uint32) string {
	return fmt.Sprintf("io_uring ring made by kfv, %d entries, restricted in the kernel to SQE ops %s; no SQE flags, no register ops",
		entries, strings.Join(ringOpNames(), ","))
}

func performIOURing(g *Gate, c *Call, _ orch.Decision, _ *Target, _ error) result {
	req := &c.Req
	addr := req.Args[1]
	var p ringParams
	if err := ReadMem(c.N.PID, addr, p[:]); err != nil {
		return failed(unix.EFAULT, "io_uring_setup: read params: "+err.Error())
	}
	flags := p.flags()
	entries, why := admitRing(uint32(req.Args[0]), &p)
	if why != "" {
		return failed(unix.EINVAL, "io_uring_setup refused: "+why)
	}
	live, err := liveRings(req.PID)
	if err != nil {
		return refused("kfv:io_uring", "count QEMU's rings: "+err.Error(), true)
	}
	if live >= maxLiveRings {
		return failed(unix.ENOMEM, fmt.Sprintf("io_uring_setup refused: QEMU holds %d rings, kfv makes at most %d", live, maxLiveRings))
	}
	if g.Listener.IDValid(c.N.ID) != nil {
		return result{kind: resGone}
	}
	fd, e := makeRing(entries, &p)
	if e != 0 {
		// What the kernel said of the caller's parameters (EINVAL,
		// ENOMEM...), as the caller's own call would have got it.
		return failed(e, "io_uring_setup performed by kfv: "+e.Error())
	}
	// The caller sees what its own io_uring_setup would have written:
	// the whole struct, flags as passed in.
	p.setFlags(flags)
	if g.Listener.IDValid(c.N.ID) != nil {
		fd.Close()
		return result{kind: resGone}
	}
	if err := WriteMem(c.N.PID, addr, p[:]); err != nil {
		fd.Close()
		return failed(unix.EFAULT, "io_uring_setup: write params back: "+err.Error())
	}
	// io_uring_setup's fds are always close-on-exec.
	return installs(fd, unix.O_CLOEXEC, ringDetail(entries))
}

// liveRings counts the io_uring fds in process pid.
func liveRings(pid int) (int, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	names, err := readDirNames(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, name := range names {
		if t, err := os.Readlink(dir + name); err == nil && t == "anon_inode:[io_uring]" {
			n++
		}
	}
	return n, nil
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// The rings are made on one thread of kfv's that does nothing else. The
// task that creates a ring holds a task context on it, and when the ring
// dies (QEMU closes it) the kernel queues task work to that task with
// TWA_SIGNAL, which interrupts what it is blocked in (measured: an
// epoll_wait of the creating thread returned EINTR). On this thread that
// only restarts its wait for the next job; on the notification loop's
// thread it would interrupt the listener's ioctls.
var ringMaker struct {
	once sync.Once
	jobs chan ringJob
}

type ringJob struct {
	entries uint32
	p       *ringParams
	done    chan ringMade
}

type ringMade struct {
	fd FD
	e  unix.Errno
}

// makeRing creates a restricted ring with p's flags and entries on the
// ring maker's thread, and leaves in p what the kernel wrote (flags
// with IORING_SETUP_R_DISABLED).
func makeRing(entries uint32, p *ringParams) (FD, unix.Errno) {
	ringMaker.once.Do(func() {
		ringMaker.jobs = make(chan ringJob)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread is the rings' creator
			for j := range ringMaker.jobs {
				fd, e := newRestrictedRing(j.entries, j.p)
				j.done <- ringMade{fd, e}
			}
		}()
	})
	done := make(chan ringMade, 1)
	ringMaker.jobs <- ringJob{entries, p, done}
	r := <-done
	return r.fd, r.e
}

// newRestrictedRing is io_uring_setup with IORING_SETUP_R_DISABLED, then
// the restrictions, then IORING_REGISTER_ENABLE_RINGS. Each call is
// retried on EINTR: the task work of a dying ring may interrupt it.
func newRestrictedRing(entries uint32, p *ringParams) (FD, unix.Errno) {
	in := *p
	in.setFlags(in.flags() | ioringSetupRDisabled)
	var fd int
	for {
		q := in
		var e unix.Errno
		fd, e = ioUringSetup(entries, &q)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -1, e
		}
		*p = q
		break
	}
	res := ringRestrictions()
	for _, step := range []struct {
		op  uint32
		arg []byte
		nr  int
	}{
		{ioringRegisterRestrictions, res, len(ringOps)},
		{ioringRegisterEnableRings, nil, 0},
	} {
		e := ioUringRegister(fd, step.op, step.arg, step.nr)
		for e == unix.EINTR {
			e = ioUringRegister(fd, step.op, step.arg, step.nr)
		}
		if e != 0 {
			unix.Close(fd)
			return -1, e
		}
	}
	return FD(fd), 0
}
