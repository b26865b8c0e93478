//go:build linux

package seccompnotify

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ExecSpec is what the loader execs once its filter is in place.
type ExecSpec struct {
	Path string   // absolute path of the program (QEMU)
	Argv []string // argv, argv[0] included
	Env  []string // the environment, exactly as QEMU must see it
	Prog []unix.SockFilter
	// ByFD execs through FD rather than by Path: a user the loader
	// dropped to may not be able to reach Path. With Name, FD is the
	// directory the program is in (execveat(FD, Name): the kernel names
	// the process after Name, as for an exec by path); without, FD is
	// the program itself (AT_EMPTY_PATH: kernels before 6.14 name the
	// process after the fd's number). The kernel checks execute
	// permission and Landlock's execute right on the file either way.
	ByFD bool
	FD   int
	Name string
}

// LoadAndExec loads the filter into the calling thread and execs spec.Path
// from that same thread. It returns only on failure.
//
// Preconditions: the caller runs on a locked OS thread (runtime.LockOSThread)
// that is the only thread that will survive exec; the filter is loaded
// without TSYNC so the Go runtime's other threads stay unfiltered and vanish
// at exec. The process should run with GODEBUG=asyncpreemptoff=1 so that no
// preemption signal lands between the two syscalls.
//
// Why it cannot deadlock whatever the profile says: after seccomp() returns,
// the thread makes exactly one syscall, execve (or execveat), which the compiled filter
// always sends to the supervisor. The supervisor takes the listener from
// this process with pidfd_getfd (TakeListener) without any help from it, so
// nothing here waits for a listener nobody has. A signal arriving meanwhile
// only needs rt_sigreturn, which the filter always allows. The listener fd
// the kernel returns is close-on-exec: it never exists in QEMU.
func LoadAndExec(spec *ExecSpec) error {
	if len(spec.Prog) == 0 {
		return errors.New("load filter: empty BPF program")
	}
	argv0, err := unix.BytePtrFromString(spec.Path)
	if err != nil {
		return fmt.Errorf("exec %q: %w", spec.Path, err)
	}
	argv, err := syscall.SlicePtrFromStrings(spec.Argv)
	if err != nil {
		return fmt.Errorf("exec %q: argv: %w", spec.Path, err)
	}
	envv, err := syscall.SlicePtrFromStrings(spec.Env)
	if err != nil {
		return fmt.Errorf("exec %q: environment: %w", spec.Path, err)
	}
	name, atFlags := emptyPath, uintptr(unix.AT_EMPTY_PATH)
	if spec.ByFD && spec.Name != "" {
		if name, err = unix.BytePtrFromString(spec.Name); err != nil {
			return fmt.Errorf("exec %q: %w", spec.Path, err)
		}
		atFlags = 0
	}
	// no_new_privs lets an unprivileged process load a filter; it also
	// means setuid helpers (qemu-bridge-helper) no longer gain privileges.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return os.NewSyscallError("prctl(PR_SET_NO_NEW_PRIVS)", err)
	}
	// WAIT_KILLABLE_RECV (Linux 5.19+): once the supervisor has received a
	// call, only a fatal signal interrupts it, so a call is never withdrawn
	// and re-issued while a decision is under way.
	flags := uintptr(unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
	_, e := seccompSetFilter(flags, spec.Prog)
	if e == unix.EINVAL {
		flags &^= unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
		_, e = seccompSetFilter(flags, spec.Prog)
	}
	if e != 0 {
		return os.NewSyscallError("seccomp(SECCOMP_SET_MODE_FILTER)", e)
	}
	// From here until exec: no allocation, no other syscall.
	if spec.ByFD {
		e = rawExecveat(spec.FD, name, argv, envv, atFlags)
	} else {
		e = rawExecve(argv0, argv, envv)
	}
	return &ExecError{Path: spec.Path, Err: e}
}

// ExecError is a failed exec of QEMU by the loader.
type ExecError struct {
	Path string
	Err  unix.Errno
}

func (e *ExecError) Error() string { return fmt.Sprintf("exec %s: %v", e.Path, e.Err) }
func (e *ExecError) Unwrap() error { return e.Err }

// TakeListener waits until the process behind pidfd has loaded a filter
// with a user-notification listener and takes a copy of that listener with
// pidfd_getfd(2). The copy is close-on-exec.
//
// It polls /proc/PID/fd for the listener (anon_inode:seccomp notify) until
// timeout, and gives up early if the process exits. The process needs no
// cooperation: it may already be blocked in a notified call.
func TakeListener(pidfd *os.File, pid int, timeout time.Duration) (*os.File, error) {
	deadline := time.Now().Add(timeout)
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	sleep := 50 * time.Microsecond
	for {
		fd, err := findListener(dir)
		if err != nil {
			return nil, err
		}
		if fd >= 0 {
			nfd, err := unix.PidfdGetfd(int(pidfd.Fd()), fd, 0)
			if err != nil {
				return nil, os.NewSyscallError("pidfd_getfd", err)
			}
			f := os.NewFile(uintptr(nfd), "seccomp-listener")
			// Check the fd we got is the listener: between readlink and
			// pidfd_getfd the number could have been reused.
			if target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(nfd)); err != nil || target != listenerLink {
				f.Close()
				continue
			}
			return f, nil
		}
		if exited(pidfd) {
			return nil, fmt.Errorf("process %d exited before loading its seccomp filter", pid)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("process %d did not load its seccomp filter within %v", pid, timeout)
		}
		time.Sleep(sleep)
		if sleep < 2*time.Millisecond {
			sleep *= 2
		}
	}
}

const listenerLink = "anon_inode:seccomp notify"

// findListener returns the number of the seccomp listener in an fd
// directory of /proc, or -1.
func findListener(dir string) (int, error) {
	d, err := os.Open(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return -1, nil // not there yet, or gone: the caller checks
		}
		return -1, fmt.Errorf("list %s: %w", dir, err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return -1, fmt.Errorf("list %s: %w", dir, err)
	}
	for _, n := range names {
		if t, err := os.Readlink(dir + "/" + n); err == nil && t == listenerLink {
			return strconv.Atoi(n)
		}
	}
	return -1, nil
}

// exited reports whether the process behind pidfd has exited (a pidfd
// polls readable then).
func exited(pidfd *os.File) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd.Fd()), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}
