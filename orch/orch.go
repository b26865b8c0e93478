package orch

import (
	"fmt"
	"net/netip"
	"time"

	"kfv/profiles"
)

// Layer is a KungFuVisor layer.
type Layer string

const (
	L1 Layer = "L1" // hardware: KVM ioctls, memory mappings
	L2 Layer = "L2" // communication bus: files, sockets, signals, processes
	L3 Layer = "L3" // services to VMs: monitor commands and what they cause
)

// SockAddr is a socket address read from the caller's memory.
type SockAddr struct {
	Family int
	Path   string         // AF_UNIX; an abstract name starts with "@"
	Addr   netip.AddrPort // AF_INET, AF_INET6
}

func (s *SockAddr) String() string {
	if s == nil {
		return ""
	}
	if s.Path != "" {
		return s.Path
	}
	if s.Addr.IsValid() {
		return s.Addr.String()
	}
	return fmt.Sprintf("family %d", s.Family)
}

// Request is one inspected syscall, decoded.
type Request struct {
	Time   time.Time
	PID    int    // thread group of the caller
	TID    int    // calling thread
	Thread string // /proc/PID/task/TID/comm, "" if it could not be read
	// Syscall is the name of the call ("openat"); Nr its number.
	Syscall string
	Nr      int
	Args    [6]uint64
	IP      uint64 // instruction pointer of the call
	// Path is the path a file syscall names, absolute (resolved against
	// the caller's cwd or dirfd as the kernel would start the lookup).
	Path string
	// PathArg is the path argument exactly as the caller passed it.
	PathArg string
	// Path2 and Path2Arg are the second path of rename and link (the new
	// name), as Path and PathArg. Rules match Path: kfv performs these
	// calls and decides again with Path set to the second path, so both
	// must be allowed.
	Path2, Path2Arg string
	// Fds maps the index of each fd argument to what it refers to
	// (the /proc/PID/fd link text: a path, "socket:[N]", "anon_inode:…").
	Fds map[int]string
	// Sock is the address of connect/bind/sendto, or for socket() just
	// the family.
	Sock *SockAddr
	// SockRaw is the socket address exactly as read from the caller:
	// emulated connect, bind and sendto pass these bytes to the kernel,
	// so that the address decided on is the address used.
	SockRaw []byte
	// Backing is what backs the memory the call names: "anon", "[heap]",
	// "[stack]", a file path, "memfd:NAME", "none" (no memory); "" when
	// the call names no memory or it could not be found out.
	Backing string
	// Mem is the memory slot of KVM_SET_USER_MEMORY_REGION, read from
	// the caller's memory.
	Mem *MemSlot
	// Ifname is the interface name of a TUNSETIFF's struct ifreq, read
	// from the caller's memory once (kfv performs the call with the
	// struct it read); "" for any other call.
	Ifname string
	// Ifreq is TUNSETIFF's struct ifreq as read from the caller: kfv
	// performs the call with these bytes. nil for any other call, or
	// when it could not be read.
	Ifreq []byte
	// HasVCPU is set, for a call that creates a process, when the
	// caller's process has a vCPU (a KVM vCPU fd, or a thread named as
	// QEMU names vCPU threads), or when that could not be found out.
	HasVCPU bool
	// OwnTarget is set, for a call that names a process by pid
	// (sysent's PIDArg), when that pid is 0 (the caller) or one of the
	// threads of QEMU's process (PID): the call changes only QEMU.
	OwnTarget bool
}

// MemSlot is struct kvm_userspace_memory_region.
type MemSlot struct {
	Slot, Flags uint32
	GPA, Size   uint64
	HVA         uint64
}

// Decision is the answer to one Request.
type Decision struct {
	// Action is what the Decision tells the kernel: allow or deny.
	Action profiles.Verdict
	Errno  int    // for VerdictDeny
	Rule   string // name of the rule that decided, "default" when none did
	Reason string // the rule's reason
	Layer  Layer
	HRSC   string // hypervisor resource the call was attributed to

	// Findings are what the detectors found about this call (nil when
	// nothing): the supervisor passes them on to the VO, beside the
	// notification loop.
	Findings []Finding
	// Hold asks the supervisor to keep the calling thread blocked on its
	// notification until the VO has decided (VO.Resolve), at most
	// HoldFor; when the bound passes, the supervisor applies Action (and
	// Errno). A supervisor that cannot hold applies Action at once.
	Hold    bool
	HoldFor time.Duration
}

// Decider decides inspected calls. Implementations must answer from
// in-memory state only: the caller holds a QEMU thread until Decide returns.
type Decider interface {
	Decide(r *Request) Decision
}
