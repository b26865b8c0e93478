package sysent

// table is every syscall kfv knows more of than its number. Order
// matters: the first call of each Effect is the one messages name, and
// Select returns names in this order. A syscall not listed here is
// decoded to its raw arguments only and performed by nobody.
//
// To teach kfv a syscall: add its row here. If kfv is to perform it, give
// it a Performer and register the performer in seccompnotify (one file
// per performer, perform_*_linux.go); nothing else lists syscalls.
var table = []Entry{
	// Files, by path. Opens are performed: kfv opens the object reached
	// and installs the fd.
	at("openat", 0, 1).effect(OpenFiles).perform(PerformOpen).flags(2),
	path("open", 0).effect(OpenFiles).perform(PerformOpen).flags(1),
	at("openat2", 0, 1).effect(OpenFiles),
	path("creat", 0).effect(OpenFiles).perform(PerformOpen),
	// open_by_handle_at names its file by a struct file_handle in the
	// caller's memory.
	blank("open_by_handle_at", Path).effect(OpenFiles),
	path("execve", 0).effect(RunPrograms),
	at("execveat", 0, 1).effect(RunPrograms),

	path("stat", 0).lookup(), path("lstat", 0).lookup(), path("access", 0).lookup(),
	at("newfstatat", 0, 1).lookup(), at("statx", 0, 1).lookup(),
	at("faccessat", 0, 1).lookup(), at("faccessat2", 0, 1).lookup(),
	path("readlink", 0).lookup(), at("readlinkat", 0, 1).lookup(),
	path("statfs", 0).lookup(), path("chdir", 0).lookup(),
	path("getxattr", 0).lookup(), path("lgetxattr", 0).lookup(), path("listxattr", 0).lookup(),
	at("inotify_add_watch", 0, 1).lookup(),

	path("unlink", 0).effect(RemoveFiles).perform(PerformUnlink),
	at("unlinkat", 0, 1).effect(RemoveFiles).perform(PerformUnlink),
	path("rmdir", 0).effect(RemoveFiles),
	// The file work of a writable 9p share: performed on the entries and
	// objects kfv resolved (rename and link decide on both paths).
	path("mkdir", 0).effect(MakeDirs).perform(PerformMkdir), at("mkdirat", 0, 1).effect(MakeDirs).perform(PerformMkdir),
	path("rename", 0).second(-1, 1).effect(RenameFiles).perform(PerformRename),
	at("renameat", 0, 1).second(2, 3).effect(RenameFiles).perform(PerformRename),
	at("renameat2", 0, 1).second(2, 3).effect(RenameFiles).perform(PerformRename),
	path("link", 0).second(-1, 1).effect(LinkFiles).perform(PerformLink),
	at("linkat", 0, 1).second(2, 3).effect(LinkFiles).perform(PerformLink),
	path("symlink", 1).effect(MakeSymlinks).perform(PerformSymlink),
	at("symlinkat", 1, 2).effect(MakeSymlinks).perform(PerformSymlink),
	path("mknod", 0).effect(MakeNodes).perform(PerformMknod), at("mknodat", 0, 1).effect(MakeNodes).perform(PerformMknod),
	path("chmod", 0).effect(ChmodByPath).perform(PerformChmod), at("fchmodat", 0, 1).effect(ChmodByPath).perform(PerformChmod),
	at("fchmodat2", 0, 1).effect(ChmodByPath).perform(PerformChmod),
	path("chown", 0).effect(ChownByPath).perform(PerformChown), at("fchownat", 0, 1).effect(ChownByPath).perform(PerformChown),
	path("lchown", 0).effect(ChownByPath).perform(PerformChown),
	at("utimensat", 0, 1).perform(PerformUtimes),
	path("truncate", 0), path("utimes", 0), at("futimesat", 0, 1),
	path("setxattr", 0), path("lsetxattr", 0), path("removexattr", 0), path("lremovexattr", 0),
	path("mount", 1), path("umount2", 0), path("pivot_root", 0), path("chroot", 0),
	path("swapon", 0), path("swapoff", 0), path("acct", 0), path("quotactl", 1),

	// Sockets. What is sent to an address is performed on kfv's copy of
	// the socket, to the address bytes decided on.
	sock("connect", 0, 1, 2).effect(SendToAddress).perform(PerformSockaddr),
	sock("bind", 0, 1, 2).perform(PerformSockaddr),
	sock("sendto", 0, 4, 5).effect(SendToAddress).perform(PerformSendTo),
	msg("sendmsg", 0, 1, -1).effect(SendToAddress).perform(PerformSendMsg),
	msg("sendmmsg", 0, 1, 2).effect(SendToAddress).perform(PerformSendMmsg),
	// listen: decided on the address the socket is bound to, performed
	// on kfv's copy of the socket it checked.
	fds("listen", 0).sockName(0).perform(PerformListen),
	fds("recvmsg", 0), fds("accept", 0), fds("accept4", 0),
	fds("getsockopt", 0), fds("setsockopt", 0),
	blank("socket", None).domain(0),

	// io_uring: the ring is made by kfv, restricted in the kernel to the
	// operations QEMU submits (its parameters are read from the caller
	// and written back).
	blank("io_uring_setup", None).perform(PerformIOURing),

	// Memory: the decoder says what backs it (Request.Backing).
	fds("mmap", 4).effect(MakeExecutable).memory(),
	blank("mprotect", Memory).effect(MakeExecutable).memory(),
	blank("pkey_mprotect", Memory).effect(MakeExecutable).memory(),
	blank("remap_file_pages", Memory).effect(MakeExecutable),
	// ioctl: the fd, KVM_SET_USER_MEMORY_REGION's slot, and TUNSETIFF's
	// interface name (Request.Ifname), which kfv performs on its copy
	// of the fd with the struct it read.
	fds("ioctl", 0).memory().perform(PerformIoctl),

	// Other processes.
	blank("clone", Process).effect(CreateProcesses), blank("clone3", Process).effect(CreateProcesses),
	blank("fork", Process).effect(CreateProcesses), blank("vfork", Process).effect(CreateProcesses),
	blank("kill", Process).effect(SendSignals), blank("tgkill", Process).effect(SendSignals),
	blank("tkill", Process).effect(SendSignals), blank("rt_sigqueueinfo", Process).effect(SendSignals),
	blank("rt_tgsigqueueinfo", Process).effect(SendSignals),
	fds("pidfd_send_signal", 0).object(Process).effect(SendSignals),
	blank("ptrace", Process).effect(ReachProcesses),
	blank("process_vm_readv", Process).effect(ReachProcesses),
	blank("process_vm_writev", Process).effect(ReachProcesses),
	fds("pidfd_getfd", 0).object(Process).effect(ReachProcesses),
	// Calls that set a process's scheduling, priority or limits by pid:
	// QEMU pins and prioritises its own threads (vCPU pinning,
	// -object thread-context); any other pid is a neighbour.
	blank("sched_setaffinity", Process).pid(0), blank("sched_setparam", Process).pid(0),
	blank("sched_setscheduler", Process).pid(0), blank("sched_setattr", Process).pid(0),
	blank("setpriority", Process).pid(1), blank("ioprio_set", Process).pid(1),
	blank("prlimit64", Process).pid(0), blank("migrate_pages", Process).pid(0),
	blank("move_pages", Process).pid(0),

	// Fds: the decoder reads what they refer to.
	fds("fcntl", 0), fds("close", 0), fds("dup", 0), fds("dup2", 0), fds("dup3", 0),
	fds("fstat", 0), fds("ftruncate", 0), fds("fchmod", 0), fds("fchown", 0), fds("fchdir", 0),
	fds("getdents64", 0), fds("flock", 0), fds("fallocate", 0), fds("fsync", 0), fds("fdatasync", 0),
	fds("finit_module", 0), fds("setns", 0),
	fds("splice", 0, 2), fds("sendfile", 0, 1), fds("copy_file_range", 0, 2),
	fds("read", 0), fds("write", 0), fds("pread64", 0), fds("pwrite64", 0),
	fds("readv", 0), fds("writev", 0), fds("preadv", 0), fds("pwritev", 0),
}

// Row builders: blank has no argument the decoder reads; the others name
// where the object is.

func blank(name string, o Object) Entry {
	return Entry{Name: name, Object: o, PathArg: -1, DirFDArg: -1, Path2Arg: -1, DirFD2Arg: -1, SockaddrArg: -1, SockLenArg: -1,
		DomainArg: -1, MsgArg: -1, VlenArg: -1, FlagsArg: -1, PIDArg: -1, SockNameArg: -1}
}

func path(name string, p int) Entry {
	e := blank(name, Path)
	e.PathArg = p
	return e
}

func at(name string, dirfd, p int) Entry {
	e := path(name, p)
	e.DirFDArg = dirfd
	return e
}

func fds(name string, i ...int) Entry {
	e := blank(name, FD)
	e.FDArgs = i
	return e
}

func sock(name string, fd, addr, length int) Entry {
	e := fds(name, fd)
	e.Object, e.SockaddrArg, e.SockLenArg = Address, addr, length
	return e
}

func msg(name string, fd, hdr, vlen int) Entry {
	e := fds(name, fd)
	e.Object, e.MsgArg, e.VlenArg = Address, hdr, vlen
	return e
}

func (e Entry) effect(x Effect) Entry     { e.Effect = x; return e }
func (e Entry) second(dirfd, p int) Entry { e.DirFD2Arg, e.Path2Arg = dirfd, p; return e }
func (e Entry) perform(p Performer) Entry { e.Perform = p; return e }
func (e Entry) object(o Object) Entry     { e.Object = o; return e }
func (e Entry) lookup() Entry             { e.Lookup = true; return e }
func (e Entry) flags(i int) Entry         { e.FlagsArg = i; return e }
func (e Entry) domain(i int) Entry        { e.DomainArg = i; return e }
func (e Entry) memory() Entry             { e.ReadsMemory = true; return e }
func (e Entry) pid(i int) Entry           { e.PIDArg = i; return e }
func (e Entry) sockName(i int) Entry      { e.SockNameArg = i; return e }
