// Package sysent is kfv's one table of the system calls it inspects:
// for each, where its arguments name an object (a path, a socket address,
// a message, an fd, memory), which kind of object that is, which group of
// equivalent calls it belongs to, and whether kfv performs it itself when
// it is allowed. The decoder, the performers, the profile's warnings and
// the rules kfv derives from a VM's configuration all read this table, so
// that what kfv knows about a syscall lives in one row.
//
// The package is data only: it imports nothing of kfv and nothing of the
// kernel, so every package can use it and plain `go test` covers it.
package sysent

// Object is the kind of object a call names.
type Object uint8

const (
	// None: the call names nothing kfv reads beyond its registers.
	None Object = iota
	// Path: a path in the caller's memory.
	Path
	// Address: a socket address in the caller's memory, given directly
	// or in a message header.
	Address
	// FD: one of the caller's fds.
	FD
	// Memory: a range of the caller's address space, or memory handed
	// to KVM.
	Memory
	// Process: another process or thread, by pid.
	Process
)

var objectNames = [...]string{None: "none", Path: "path", Address: "address", FD: "fd", Memory: "memory", Process: "process"}

func (o Object) String() string {
	if int(o) < len(objectNames) {
		return objectNames[o]
	}
	return "object?"
}

// Effect is what a group of equivalent calls achieves. If the supervisor
// is gone, every inspected call fails with ENOSYS and libc and attackers
// fall back to an equivalent (glibc retries clone3 as clone, openat2 as
// openat): a profile must treat the calls of one effect alike.
type Effect uint8

const (
	NoEffect Effect = iota
	OpenFiles
	RunPrograms
	CreateProcesses
	SendSignals
	ReachProcesses
	MakeExecutable
	SendToAddress
	RenameFiles
	LinkFiles
	MakeSymlinks
	RemoveFiles
	MakeDirs
	MakeNodes
	ChmodByPath
	ChownByPath
	numEffects
)

var effectNames = [numEffects]string{
	NoEffect: "", OpenFiles: "open files", RunPrograms: "run programs", CreateProcesses: "create processes",
	SendSignals: "send signals", ReachProcesses: "reach other processes", MakeExecutable: "make memory executable",
	SendToAddress: "send to an address", RenameFiles: "rename files", LinkFiles: "link files",
	MakeSymlinks: "make symlinks", RemoveFiles: "remove files", MakeDirs: "make directories",
	MakeNodes: "make device nodes", ChmodByPath: "change modes by path", ChownByPath: "change owners by path",
}

func (e Effect) String() string {
	if e < numEffects {
		return effectNames[e]
	}
	return "effect?"
}

// Performer names how kfv performs an allowed call itself, so that what
// it checked is what the call acts on: another QEMU thread can rewrite a
// path or an address in QEMU's memory between kfv's read and the
// kernel's, so such a call must never be answered CONTINUE.
type Performer uint8

const (
	// PerformNone: an allowed call continues in the kernel.
	PerformNone Performer = iota
	// PerformOpen opens the object reached and installs the fd (ADDFD).
	PerformOpen
	// PerformUnlink removes the entry in the directory kfv resolved.
	PerformUnlink
	// PerformSockaddr connects or binds a copy of the socket to the
	// address bytes decided on.
	PerformSockaddr
	// PerformSendTo sends the data to the address decided on.
	PerformSendTo
	// PerformSendMsg sends the message on a copy of the socket.
	PerformSendMsg
	// PerformSendMmsg sends each message of the vector on a copy of the
	// socket and writes msg_len back.
	PerformSendMmsg
	// PerformIOURing makes the io_uring kfv hands the caller: kfv creates
	// the ring itself, restricted to the operations QEMU's block layer
	// and main loop submit, and installs it (ADDFD). It names nothing by
	// reference: it is performed so that the kernel, not kfv, enforces
	// what the ring can do.
	PerformIOURing
	// PerformMkdir makes the directory in the parent kfv resolved.
	PerformMkdir
	// PerformMknod makes a regular file, FIFO or socket node in the
	// parent kfv resolved; device nodes are refused.
	PerformMknod
	// PerformRename renames between the two entries kfv resolved and
	// decided on, each in its own resolved parent.
	PerformRename
	// PerformLink links the entry (or object) kfv resolved and decided on
	// to the second entry.
	PerformLink
	// PerformSymlink makes the symlink in the parent kfv resolved (its
	// target is text, not resolved).
	PerformSymlink
	// PerformChmod changes the mode of the object kfv resolved (and of
	// QEMU's own fd for /proc/self/fd/N).
	PerformChmod
	// PerformChown changes the owner of the object or entry kfv resolved.
	PerformChown
	// PerformUtimes sets the times of the object or entry kfv resolved.
	PerformUtimes
	// PerformListen listens on a copy of the socket (pidfd_getfd) after
	// checking that the copy is bound to the address decided on: a dup2
	// by another thread between the check and the call cannot swap in
	// another socket.
	PerformListen
	// PerformIoctl carries out, on a copy of the fd, the ioctls that kfv
	// decides on by what they read from the caller's memory: TUNSETIFF,
	// whose struct ifreq names the interface (read once, the kernel's
	// answer written back). Other ioctls continue.
	PerformIoctl
	// NumPerformers bounds the performers, for tables indexed by them.
	NumPerformers
)

var performerNames = [NumPerformers]string{"none", "open", "unlink", "sockaddr", "sendto", "sendmsg", "sendmmsg", "io_uring",
	"mkdir", "mknod", "rename", "link", "symlink", "chmod", "chown", "utimes", "listen", "ioctl"}

func (p Performer) String() string {
	if p < NumPerformers {
		return performerNames[p]
	}
	return "performer?"
}

// Entry is everything kfv knows about one syscall. Argument indexes are
// positions in seccomp_data.args; -1 is none.
type Entry struct {
	Name   string
	Object Object
	Effect Effect
	// Perform is how kfv performs the call when it is allowed.
	Perform Performer
	// Lookup marks calls that only look their object up (stat, access,
	// readlink): continued after the check, a rewritten path reveals
	// metadata but changes nothing.
	Lookup bool

	// PathArg is the path argument, DirFDArg the directory fd it is
	// relative to.
	PathArg, DirFDArg int
	// Path2Arg is the second path of rename and link (the new name),
	// DirFD2Arg its directory fd: a performed call decides on both.
	Path2Arg, DirFD2Arg int
	// FDArgs are the fd arguments whose targets the decoder reads.
	FDArgs []int
	// SockaddrArg and SockLenArg are a struct sockaddr and its length.
	SockaddrArg, SockLenArg int
	// DomainArg is socket(2)'s family argument.
	DomainArg int
	// MsgArg is a struct msghdr (sendmsg) or an array of struct mmsghdr
	// (sendmmsg) whose length is VlenArg.
	MsgArg, VlenArg int
	// FlagsArg is the open flags argument of the open family (-1: creat,
	// whose flags are fixed).
	FlagsArg int
	// PIDArg is the argument that names a process or thread by id, 0
	// standing for the caller, in calls that change that process's
	// scheduling, priority or limits: the decoder says whether it names
	// QEMU itself (Request.OwnTarget).
	PIDArg int
	// SockNameArg is a socket whose bound address (getsockname) the
	// decoder reads into Request.Sock: listen's.
	SockNameArg int
	// ReadsMemory marks calls whose memory the decoder describes
	// (Request.Backing): mmap's fd, the mappings under mprotect's range.
	ReadsMemory bool
}

// Performed reports whether kfv performs an allowed call itself.
func (e *Entry) Performed() bool { return e.Perform != PerformNone }

// OnCopy reports whether kfv performs the call on its own copy of the
// caller's fd because what it decided on belongs to the object behind the
// fd (the address a socket is bound to) or is read from the caller's
// memory by an ioctl: another thread can swap the fd (dup2) or rewrite the
// memory between kfv's check and the kernel's.
func (e *Entry) OnCopy() bool { return e.Perform == PerformListen || e.Perform == PerformIoctl }

// Creates reports whether kfv performs the call to make the object it
// returns (io_uring_setup's ring) rather than to act on what the call
// names in the caller's memory.
func (e *Entry) Creates() bool { return e.Perform == PerformIOURing }

// ByReference reports whether the call's object is named in the caller's
// memory (a path, a socket address, a message).
func (e *Entry) ByReference() bool { return e.Object == Path || e.Object == Address }

// ContinuesByReference reports whether an allowed call continues after a
// check of its object in the caller's memory, where another thread can
// rewrite it in between: the calls a profile is warned about allowing.
func (e *Entry) ContinuesByReference() bool {
	return e.ByReference() && !e.Performed() && !e.Lookup
}

// Reaches reports whether the call acts on what a payload in QEMU is
// after: a file by its path (opened, run or changed; a mere lookup is
// not), another process, executable memory, a network address or a new
// socket. The escalation ladder counts a default denial of such a call; a
// denial of any other call (an ioctl, fcntl or prctl a profile does not
// know) is QEMU's surprise, not an attacker's goal.
func (e *Entry) Reaches() bool {
	if e.Lookup {
		return false
	}
	return e.Effect != NoEffect || e.Object == Path || e.Object == Process ||
		e.Object == Address || e.DomainArg >= 0
}

var byName = func() map[string]*Entry {
	m := make(map[string]*Entry, len(table))
	for i := range table {
		m[table[i].Name] = &table[i]
	}
	return m
}()

// Lookup returns the entry of a syscall, by name.
func Lookup(name string) (*Entry, bool) {
	e, ok := byName[name]
	return e, ok
}

// Entries returns the table, in its order. Callers must not change it.
func Entries() []Entry { return table }

// Select returns the names of the entries for which keep is true, in
// table order.
func Select(keep func(*Entry) bool) []string {
	var out []string
	for i := range table {
		if keep(&table[i]) {
			out = append(out, table[i].Name)
		}
	}
	return out
}

// Group is the calls of one effect, in table order.
type Group struct {
	Effect Effect
	Names  []string
}

// Equivalents returns the groups of equivalent calls, in Effect order;
// each group's first call is the one messages name.
func Equivalents() []Group {
	var out []Group
	for e := NoEffect + 1; e < numEffects; e++ {
		g := Group{Effect: e, Names: Select(func(x *Entry) bool { return x.Effect == e })}
		if len(g.Names) > 0 {
			out = append(out, g)
		}
	}
	return out
}
