//go:build linux

package seccompnotify

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"kfv/memwatch"
	"kfv/orch"
	"kfv/sysent"
)

const maxPath = 4096

// UnnamedPrefix marks the name of a thread that carries its process's
// name without being its main thread ("unnamed:qemu-system-x86"), so
// that rules and [[hrsc]] tables for the main loop do not take it.
const UnnamedPrefix = "unnamed:"

// Decoder turns notifications into orch requests.
type Decoder struct {
	Names map[int]string // syscall numbers to names (Filter.Names)

	// PID is the process the filter was loaded for (QEMU). Its threads'
	// names are read through kept fds; calls from other processes (a
	// child QEMU forked, where a profile allows it) take the slower path.
	PID int

	threadsOnce sync.Once
	threads     *threadNames

	// ram is the sealed guest RAM (SealGuestRAM), nil before; ramMu
	// serialises its changes.
	ram   atomic.Pointer[guestRAM]
	ramMu sync.Mutex

	// HoldOthers, if set, stops every thread of process pid but tid, the
	// caller of notification id, and confirms it, before a call that
	// kfv decides and lets continue is read after start-up (holdWanted:
	// memory slots, executable mmap and mprotect): what is read then is
	// what the kernel acts on once the call continues, as no other
	// thread can change it. mem is the range [start, end) of the caller's
	// memory the decision reads (none: {0, 0}): a thread that cannot run
	// user code before kfv thaws it and whose call in progress writes
	// nothing there counts as still.
	// The gate's Answered ends the hold once the call has run (and says
	// in the call's event what was held). An error means the others
	// could not be confirmed stopped: nothing is held then, and the call
	// is refused (its backing reads "unheld").
	HoldOthers func(id uint64, pid, tid int, mem [2]uint64) error
}

// Follow makes pid the process whose threads' names are read through
// kept fds: the daemon QEMU's -daemonize forked. Call it from the
// goroutine that decodes.
func (d *Decoder) Follow(pid int) {
	d.threadsOnce.Do(func() {})
	if d.threads != nil {
		d.threads.Close()
	}
	d.PID, d.threads = pid, newThreadNames(pid)
}

// Close releases the fds the decoder keeps.
func (d *Decoder) Close() {
	if d.threads != nil {
		d.threads.Close()
	}
}

// Decode fills r from n: the syscall name, the calling thread's process
// and name, fd targets, the path (made absolute) and socket address, read
// from the caller's memory. Errors reading the caller's memory are reported
// in the returned error but r is filled as far as possible; the caller
// must then check l.IDValid(n.ID) before acting on anything read.
func (d *Decoder) Decode(n *Notif, r *orch.Request) error {
	_, err := d.decode(n, r)
	return err
}

// DecodeCall decodes c.N into c.Req and c.DecodeErr as Decode does, and
// sets c.OwnArgs when nothing decoded depends on the caller still being
// the thread that made the call (Call.OwnArgs).
func (d *Decoder) DecodeCall(c *Call) {
	c.OwnArgs, c.DecodeErr = d.decode(&c.N, &c.Req)
}

// decode is Decode; own reports that r holds only the notification's
// own registers and names read through kept fds (threadNames.nameKept),
// nothing read from the caller's memory or from /proc by its id.
func (d *Decoder) decode(n *Notif, r *orch.Request) (bool, error) {
	*r = orch.Request{
		Time: time.Now(),
		TID:  n.PID,
		Nr:   n.Nr,
		Args: n.Args,
		IP:   n.IP,
	}
	r.Syscall = d.Names[n.Nr]
	if r.Syscall == "" {
		r.Syscall = "syscall_" + strconv.Itoa(n.Nr)
	}
	tid := strconv.Itoa(n.PID)
	if d.PID > 0 {
		d.threadsOnce.Do(func() { d.threads = newThreadNames(d.PID) })
	}
	own := false
	if name, ok, kept := d.threads.nameKept(n.PID); ok {
		r.PID, r.Thread = d.PID, name
		own = kept
		// Any thread can name itself (prctl PR_SET_NAME, allowed in the
		// kernel: QEMU names each thread as it starts), so a name says
		// which role a thread claims, not which it has. The one role a
		// name must not buy is the main thread's: the process's name on
		// another thread is a thread that never named itself, or one
		// that took the main loop's name.
		if int(n.PID) != d.PID {
			main, ok, kept := d.threads.nameKept(d.PID)
			if ok && main == name {
				r.Thread = UnnamedPrefix + name
			}
			own = own && ok && kept
		}
	} else {
		r.PID = tgidOf(n.PID)
		if c, err := os.ReadFile("/proc/" + tid + "/comm"); err == nil {
			r.Thread = strings.TrimSuffix(string(c), "\n")
		}
	}
	k, ok := sysent.Lookup(r.Syscall)
	if !ok {
		return own, nil
	}
	own = own && registersOnly(k)
	if k.Effect == sysent.CreateProcesses {
		r.HasVCPU = hasVCPU(r.PID)
	}
	if k.PIDArg >= 0 {
		r.OwnTarget = ownThread(r.PID, int32(n.Args[k.PIDArg]))
	}
	// A call decided on what another thread can change and then
	// continued holds QEMU's other threads still first, before its fd
	// targets or mappings are read (holdWanted says which). Unheld, it
	// is decoded all the same, for the refusal's event.
	var unheld error
	if what, mem := d.holdWanted(n, r); what != "" {
		if err := d.HoldOthers(n.ID, r.PID, n.PID, mem); err != nil {
			unheld = fmt.Errorf("hold QEMU's other threads for %s: %w", what, err)
		}
	}
	var errs []error
	for _, i := range k.FDArgs {
		fd := int32(n.Args[i])
		if fd < 0 {
			continue
		}
		if r.Fds == nil {
			r.Fds = make(map[int]string, len(k.FDArgs)+1)
		}
		r.Fds[i] = fdTarget(tid, int(fd))
	}
	if k.PathArg >= 0 {
		if err := decodePath(n, r, tid, k.PathArg, k.DirFDArg, &r.PathArg, &r.Path); err != nil {
			errs = append(errs, err)
		}
	}
	if k.Path2Arg >= 0 {
		if err := decodePath(n, r, tid, k.Path2Arg, k.DirFD2Arg, &r.Path2Arg, &r.Path2); err != nil {
			errs = append(errs, err)
		}
	}
	if k.SockaddrArg >= 0 && n.Args[k.SockaddrArg] != 0 {
		sa, raw, err := readSockaddrRaw(n.PID, n.Args[k.SockaddrArg], n.Args[k.SockLenArg])
		if err != nil {
			errs = append(errs, fmt.Errorf("read socket address: %w", err))
		}
		r.Sock, r.SockRaw = sa, raw
	}
	if k.MsgArg >= 0 {
		sa, raw, err := readMsgAddrs(n.PID, n.Args[k.MsgArg], k.VlenArg, n.Args)
		if err != nil {
			errs = append(errs, fmt.Errorf("read message header: %w", err))
			// Unreadable: say there is an address, of no family, so
			// that no "without address" rule can match.
			sa, raw = &orch.SockAddr{Family: FamilyUnknown}, nil
		}
		r.Sock, r.SockRaw = sa, raw
	}
	if k.DomainArg >= 0 {
		r.Sock = &orch.SockAddr{Family: int(int32(n.Args[k.DomainArg]))}
	}
	if k.SockNameArg >= 0 {
		if err := decodeBoundAddress(r, int(int32(n.Args[k.SockNameArg]))); err != nil {
			errs = append(errs, fmt.Errorf("read bound address: %w", err))
		}
	}
	if r.Syscall == "ioctl" && uint32(n.Args[1]) == tunSetIff {
		if err := decodeIfreq(n, r); err != nil {
			errs = append(errs, err)
		}
	}
	if k.ReadsMemory {
		if err := d.decodeMemory(n, r, tid); err != nil {
			errs = append(errs, err)
		}
	}
	if unheld != nil {
		r.Backing = "unheld" // no rule admits it
		return false, unheld
	}
	if len(errs) > 0 {
		return false, errs[0]
	}
	return own, nil
}

// registersOnly reports whether decoding a call of k reads nothing but
// its registers: no fd target, path, address, message, bound address,
// memory, and no /proc lookup of the caller's process (vCPUs, a pid
// argument). An ioctl may read an ifreq (TUNSETIFF), and a performed
// call acts before it is answered: never.
func registersOnly(k *sysent.Entry) bool {
	return len(k.FDArgs) == 0 && k.PathArg < 0 && k.Path2Arg < 0 && k.SockaddrArg < 0 &&
		k.MsgArg < 0 && k.SockNameArg < 0 && !k.ReadsMemory && k.PIDArg < 0 &&
		k.Effect != sysent.CreateProcesses && k.Name != "ioctl" && !k.Performed()
}

// decodePath reads the path argument i (relative to directory fd
// argument dirfd, -1 for none) into arg, as passed, and abs, made
// absolute.
func decodePath(n *Notif, r *orch.Request, tid string, i, dirfd int, arg, abs *string) error {
	p, err := ReadString(n.PID, n.Args[i], maxPath)
	if err != nil {
		return fmt.Errorf("read path argument %d: %w", i, err)
	}
	*arg = p
	base := ""
	if !strings.HasPrefix(p, "/") {
		if dirfd >= 0 && int32(n.Args[dirfd]) != unix.AT_FDCWD {
			base = fdTarget(tid, int(int32(n.Args[dirfd])))
			if r.Fds == nil {
				r.Fds = map[int]string{}
			}
			r.Fds[dirfd] = base
		} else if cwd, err := os.Readlink("/proc/" + tid + "/cwd"); err == nil {
			base = cwd
		}
	}
	*abs = absPath(base, p)
	return nil
}

// absPath joins p to base and cleans it, as a lookup would start: "."
// and ".." are folded lexically, symlinks are not followed. An empty p
// (AT_EMPTY_PATH) names base itself.
func absPath(base, p string) string {
	if p == "" {
		return base
	}
	if !strings.HasPrefix(p, "/") {
		if base == "" || !strings.HasPrefix(base, "/") {
			return p // relative to something that is not a directory path
		}
		p = base + "/" + p
	}
	return path.Clean(p)
}

func fdTarget(tid string, fd int) string {
	t, err := os.Readlink("/proc/" + tid + "/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "fd:" + strconv.Itoa(fd) + ":bad"
	}
	return t
}

// tgidOf returns the thread group (process) id of a thread, or tid itself
// when /proc does not say.
// ownThread reports whether id, a pid argument as the kernel reads it
// (an int, the low 32 bits), names the caller (0) or a thread of process
// pid. The id is a register, so it cannot change under kfv; the thread it
// names could exit and its id be reused by another process before the
// call runs, which needs the kernel to hand out every other id first.
func ownThread(pid int, id int32) bool {
	if id == 0 {
		return true
	}
	if id < 0 || pid <= 0 {
		return false
	}
	var st unix.Stat_t
	return unix.Stat("/proc/"+strconv.Itoa(pid)+"/task/"+strconv.Itoa(int(id)), &st) == nil
}

func tgidOf(tid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return tid
	}
	s := string(b)
	i := strings.Index(s, "\nTgid:")
	if i < 0 {
		return tid
	}
	s = strings.TrimLeft(s[i+6:], " \t")
	if j := strings.IndexByte(s, '\n'); j >= 0 {
		s = s[:j]
	}
	if v, err := strconv.Atoi(s); err == nil {
		return v
	}
	return tid
}

// readSockaddrRaw reads a struct sockaddr of length l at addr, and
// returns the bytes read too: a performed call passes exactly these to
// the kernel, so the address checked is the address used.
func readSockaddrRaw(pid int, addr, l uint64) (*orch.SockAddr, []byte, error) {
	if l < 2 || l > 128 {
		return nil, nil, fmt.Errorf("socket address length %d: %w", l, unix.EINVAL)
	}
	buf := make([]byte, l)
	if err := ReadMem(pid, addr, buf); err != nil {
		return nil, nil, err
	}
	sa, err := ParseSockaddr(buf)
	return sa, buf, err
}

// ParseSockaddr decodes a struct sockaddr (AF_UNIX, AF_INET, AF_INET6; other
// families keep only the family). It never panics on short or odd input.
func ParseSockaddr(b []byte) (*orch.SockAddr, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("socket address of %d bytes: %w", len(b), unix.EINVAL)
	}
	sa := &orch.SockAddr{Family: int(binary.NativeEndian.Uint16(b))}
	switch sa.Family {
	case unix.AF_UNIX:
		p := b[2:]
		if len(p) == 0 {
			sa.Path = "" // unnamed
			return sa, nil
		}
		if p[0] == 0 {
			// Abstract: the name is every remaining byte.
			sa.Path = "@" + string(p[1:])
			return sa, nil
		}
		if i := indexNUL(p); i >= 0 {
			p = p[:i]
		}
		sa.Path = string(p)
	case unix.AF_INET:
		if len(b) < 8 {
			return sa, fmt.Errorf("AF_INET address of %d bytes: %w", len(b), unix.EINVAL)
		}
		port := binary.BigEndian.Uint16(b[2:])
		sa.Addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port)
	case unix.AF_INET6:
		if len(b) < 24 {
			return sa, fmt.Errorf("AF_INET6 address of %d bytes: %w", len(b), unix.EINVAL)
		}
		port := binary.BigEndian.Uint16(b[2:])
		sa.Addr = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), port)
	}
	return sa, nil
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// FamilyUnknown marks a socket address kfv could not read, or several
// different addresses in one sendmmsg: no address rule matches it.
const FamilyUnknown = -1

// Sizes of struct msghdr and struct mmsghdr on x86_64.
const (
	sizeofMsghdr  = 56
	sizeofMmsghdr = 64
	maxMmsg       = 1024 // UIO_MAXIOV: the kernel sends at most this many
)

// readMsgAddrs reads the destination address of sendmsg's msghdr, or of
// every mmsghdr of sendmmsg (vlenArg >= 0). It returns nil when no message
// names an address (a connected socket), the address when all that name
// one name the same, and FamilyUnknown when they differ; with the bytes
// read (what a performed send sends to: the first message's, when all
// name the same address).
func readMsgAddrs(pid int, addr uint64, vlenArg int, args [6]uint64) (*orch.SockAddr, []byte, error) {
	count, stride := uint64(1), uint64(sizeofMsghdr)
	if vlenArg >= 0 {
		count, stride = uint64(uint32(args[vlenArg])), sizeofMmsghdr
		if count > maxMmsg {
			count = maxMmsg
		}
	}
	if count == 0 {
		return nil, nil, nil
	}
	buf := make([]byte, count*stride)
	if err := ReadMem(pid, addr, buf); err != nil {
		return nil, nil, err
	}
	var out *orch.SockAddr
	var outRaw []byte
	for i := uint64(0); i < count; i++ {
		h := buf[i*stride:]
		name := binary.NativeEndian.Uint64(h[0:])
		namelen := uint64(binary.NativeEndian.Uint32(h[8:]))
		if name == 0 || namelen == 0 {
			continue // the kernel ignores msg_name then
		}
		sa, raw, err := readSockaddrRaw(pid, name, namelen)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case out == nil:
			out, outRaw = sa, raw
		case out.Family != sa.Family || out.String() != sa.String():
			return &orch.SockAddr{Family: FamilyUnknown}, nil, nil
		}
	}
	return out, outRaw, nil
}

// kvmSetUserMemoryRegion is KVM_SET_USER_MEMORY_REGION,
// _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region).
const kvmSetUserMemoryRegion = 0x4020ae46

// decodeMemory fills r.Backing (and r.Mem) for calls that name memory:
// mmap (its fd, or anonymous), mprotect and pkey_mprotect (the mappings
// under the range, from /proc/TID/maps), and KVM_SET_USER_MEMORY_REGION
// (the slot read from the caller's memory and the mappings under its host
// range).
func (d *Decoder) decodeMemory(n *Notif, r *orch.Request, tid string) error {
	switch r.Syscall {
	case "mmap":
		if n.Args[3]&unix.MAP_ANONYMOUS != 0 {
			r.Backing = "anon"
		} else if t, ok := r.Fds[4]; ok {
			r.Backing = (&memwatch.Mapping{Path: t}).Backing()
		}
	case "mprotect", "pkey_mprotect":
		b, err := backingOf(tid, n.Args[0], n.Args[1])
		if err != nil {
			return err
		}
		r.Backing = b
	case "ioctl":
		if uint32(n.Args[1]) != kvmSetUserMemoryRegion {
			return nil
		}
		// After start-up QEMU's other threads are held still by now
		// (holdWanted): kfv answers CONTINUE, and the kernel copies the
		// struct again, so it must not change in between.
		var raw [32]byte
		if err := ReadMem(n.PID, n.Args[2], raw[:]); err != nil {
			r.Backing = "unreadable"
			return fmt.Errorf("read kvm_userspace_memory_region: %w", err)
		}
		m := &orch.MemSlot{
			Slot:  binary.NativeEndian.Uint32(raw[0:]),
			Flags: binary.NativeEndian.Uint32(raw[4:]),
			GPA:   binary.NativeEndian.Uint64(raw[8:]),
			Size:  binary.NativeEndian.Uint64(raw[16:]),
			HVA:   binary.NativeEndian.Uint64(raw[24:]),
		}
		r.Mem = m
		if m.Size == 0 {
			r.Backing = "none" // deleting the slot
			return nil
		}
		b, err := backingOf(tid, m.HVA, m.Size)
		if err != nil {
			return err
		}
		if !d.GuestRAMSealed(r.PID) && strings.HasPrefix(r.Thread, "CPU ") {
			// A vCPU thread maps memory only once the guest runs (its
			// firmware programming a BAR): if the monitor has not
			// sealed the guest RAM yet, this is the last moment.
			_, _, _ = d.SealGuestRAM(r.PID) // unsealed, slots are decided as before
		}
		r.Backing = d.slotBacking(r.PID, b, m.HVA, m.Size)
	}
	return nil
}

// holdWanted says which call n is when kfv must hold QEMU's other
// threads still while deciding it, "" when it need not, and which range
// of the caller's memory its decision reads. These are the
// calls kfv decides on state another thread can change and then lets
// continue, because it cannot perform them: KVM_SET_USER_MEMORY_REGION
// (the struct in QEMU's memory: KVM serves only its VM's own process),
// mmap of an fd with PROT_EXEC (the fd's target: another thread can dup2
// a foreign file onto the number) and mprotect with PROT_EXEC (the
// mapping under the range: another thread can map over it with
// MAP_FIXED). kfv cannot perform a mapping in QEMU's address space
// either. Only after start-up (the guest RAM sealed, or from a vCPU
// thread, which runs only once the guest does): before it no guest input
// has reached QEMU, and its dynamic loader and accelerator make most of
// these calls then.
func (d *Decoder) holdWanted(n *Notif, r *orch.Request) (what string, mem [2]uint64) {
	if d.HoldOthers == nil || r.PID <= 0 {
		return "", mem
	}
	switch r.Syscall {
	case "ioctl":
		if uint32(n.Args[1]) == kvmSetUserMemoryRegion {
			what = "KVM_SET_USER_MEMORY_REGION"
			mem = [2]uint64{n.Args[2], n.Args[2] + 32} // the struct
		}
	case "mmap":
		if n.Args[2]&unix.PROT_EXEC != 0 && n.Args[3]&unix.MAP_ANONYMOUS == 0 && int32(n.Args[4]) >= 0 {
			what = "mmap of an fd with PROT_EXEC"
		}
	case "mprotect", "pkey_mprotect":
		if n.Args[2]&unix.PROT_EXEC != 0 {
			what = r.Syscall + " with PROT_EXEC"
		}
	}
	if what == "" || !d.GuestRAMSealed(r.PID) && !strings.HasPrefix(r.Thread, "CPU ") {
		return "", [2]uint64{}
	}
	return what, mem
}

// backingOf reads the caller's mappings and says what backs a range.
func backingOf(tid string, addr, size uint64) (string, error) {
	b, err := os.ReadFile("/proc/" + tid + "/maps")
	if err != nil {
		return "", fmt.Errorf("read maps: %w", err)
	}
	maps, err := memwatch.ParseMaps(b)
	if err != nil {
		return "", fmt.Errorf("parse maps of %s: %w", tid, err)
	}
	return memwatch.BackingOf(maps, addr, size), nil
}
