//go:build linux

package seccompnotify

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned by Receive once no task uses the filter any more
// (QEMU and everything it forked have exited) or after Close.
var ErrClosed = errors.New("seccomp listener closed: no task uses the filter")

// ErrGone is returned by Respond, AddFD and IDValid when the notification is
// no longer valid: the calling thread was killed or its call interrupted.
// It is normal, never fatal.
var ErrGone = errors.New("notification no longer valid")

// Notif is one received notification: a thread stopped in a syscall.
type Notif struct {
	ID   uint64
	PID  int // thread id of the caller, in the supervisor's pid namespace
	Nr   int
	Arch uint32
	IP   uint64
	Args [6]uint64
}

// Listener owns a seccomp user-notification fd. One goroutine should call
// Receive; Respond, IDValid and AddFD may be called from any goroutine.
type Listener struct {
	f      *os.File
	fd     int
	stop   *os.File // read end of the stop pipe, polled with the listener
	stopFD int32    // its number (File.Fd costs an fcntl on every call)
	wake   *os.File // write end; Close writes to it
	raw    notifRaw

	// journal, when set, gets every notification before it is returned
	// and frees it on its answer (journal_linux.go); nil costs nothing.
	journal  *Journal
	stopped  chan struct{} // closed by Shutdown: wakes a Receive waiting for a journal slot
	stopOnce sync.Once
}

// NewListener wraps a listener fd (taken with pidfd_getfd) and checks that
// the kernel's notification structs have the sizes this package was built
// for.
func NewListener(f *os.File) (*Listener, error) {
	sz, err := getNotifSizes()
	if err != nil {
		return nil, os.NewSyscallError("seccomp(SECCOMP_GET_NOTIF_SIZES)", err)
	}
	// The kernel fills sizeof(struct seccomp_notif) bytes on RECV; a bigger
	// struct than ours would overrun the buffer.
	if sz.Notif != 80 || sz.NotifResp != 24 || sz.Data != 64 {
		return nil, fmt.Errorf("kernel seccomp notification sizes %d/%d/%d, kfv knows 80/24/64", sz.Notif, sz.NotifResp, sz.Data)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create listener stop pipe: %w", err)
	}
	return &Listener{f: f, fd: int(f.Fd()), stop: r, stopFD: int32(r.Fd()), wake: w, stopped: make(chan struct{})}, nil
}

// UseJournal makes l record every notification it receives in j, and
// free it when answered (Journal). Call it before the first Receive; a
// new supervisor then calls j.Resume(l).
func (l *Listener) UseJournal(j *Journal) { l.journal = j }

// File returns the listener fd (for keepers and tests). The Listener still
// owns it.
func (l *Listener) File() *os.File { return l.f }

// SetSyncWakeUp asks the kernel to wake the target on the CPU the
// supervisor answers from (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, Linux 6.6+),
// which cuts the round trip. It returns an error wrapping EINVAL or ENOTTY
// on older kernels; callers may go on without it.
func (l *Listener) SetSyncWakeUp() error {
	if err := setNotifFlags(l.fd, unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP); err != nil {
		return os.NewSyscallError("ioctl(SECCOMP_IOCTL_NOTIF_SET_FLAGS)", err)
	}
	return nil
}

// Receive waits for the next notification. It returns ErrClosed when no
// task uses the filter any more or Close was called. EINTR and withdrawn
// notifications (the caller was interrupted between poll and receive:
// ENOENT) are retried here.
//
// With a journal (UseJournal), the kernel writes the notification straight
// into a journal slot; with every slot in use, Receive waits for one
// (Journal.take) and the next notification waits in the kernel.
func (l *Listener) Receive(n *Notif) error {
	slot := int32(-1)
	if l.journal != nil {
		i, err := l.journal.take(l)
		if err != nil {
			return err
		}
		slot = i
	}
	err := l.receive(n, slot)
	if err != nil && slot >= 0 {
		l.journal.release(slot)
	}
	return err
}

// receive is Receive into journal slot slot, or into l.raw if slot < 0.
func (l *Listener) receive(n *Notif, slot int32) error {
	fds := []unix.PollFd{
		{Fd: int32(l.fd), Events: unix.POLLIN},
		{Fd: l.stopFD, Events: unix.POLLIN},
	}
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		// poll first: a blocked RECV cannot be woken for shutdown, and
		// POLLHUP is how the kernel says the last filtered task is gone.
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return os.NewSyscallError("poll(seccomp listener)", err)
		}
		if fds[1].Revents != 0 {
			return ErrClosed
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			if fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
				return ErrClosed
			}
			continue
		}
		raw := &l.raw
		if slot >= 0 {
			raw = l.journal.begin(slot)
		}
		err := recvNotif(l.fd, raw)
		switch {
		case err == nil:
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ENOENT):
			// ENOENT: the notification was withdrawn (its thread got a
			// signal or died) between poll and receive.
			continue
		default:
			return os.NewSyscallError("ioctl(SECCOMP_IOCTL_NOTIF_RECV)", err)
		}
		*n = Notif{
			ID:   raw.ID,
			PID:  int(raw.PID),
			Nr:   int(raw.Nr),
			Arch: raw.Arch,
			IP:   raw.IP,
			Args: raw.Args,
		}
		if slot >= 0 {
			l.journal.commit(slot, raw.ID)
		}
		return nil
	}
}

// IDValid reports whether the notification is still pending: its thread
// is still blocked in the call. Check it after reading the caller's memory
// and before acting on what was read (the pid may have been reused).
func (l *Listener) IDValid(id uint64) error {
	if err := idValid(l.fd, id); err != nil {
		if errors.Is(err, unix.ENOENT) {
			l.answered(id) // nobody left to answer
			return ErrGone
		}
		return os.NewSyscallError("ioctl(SECCOMP_IOCTL_NOTIF_ID_VALID)", err)
	}
	return nil
}

// Continue lets the call proceed in the kernel as if it had not been
// filtered (SECCOMP_USER_NOTIF_FLAG_CONTINUE).
//
// Never answer Continue to a decision taken from pointer arguments: another
// thread of the caller can rewrite the memory between the read and the
// kernel's own read (TOCTOU). Such calls are performed (Gate.Answer).
func (l *Listener) Continue(id uint64) error {
	return l.send(&respRaw{ID: id, Flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE})
}

// Fail makes the call return -1 with errno. errno must be > 0.
func (l *Listener) Fail(id uint64, errno unix.Errno) error {
	if errno <= 0 {
		return fmt.Errorf("fail notification %d: errno %d is not positive", id, errno)
	}
	return l.send(&respRaw{ID: id, Error: -int32(errno)})
}

// Return makes the call return val without running it (emulation).
func (l *Listener) Return(id uint64, val int64) error {
	return l.send(&respRaw{ID: id, Val: val})
}

func (l *Listener) send(r *respRaw) error {
	for {
		err := sendResp(l.fd, r)
		switch {
		case err == nil:
			l.answered(r.ID)
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOENT):
			// The target's call was interrupted or the target died: there
			// is nobody left to answer.
			l.answered(r.ID)
			return ErrGone
		}
		return os.NewSyscallError("ioctl(SECCOMP_IOCTL_NOTIF_SEND)", err)
	}
}

// AddFD installs src into the caller's fd table and, with send, answers the
// notification with the new fd number atomically
// (SECCOMP_ADDFD_FLAG_SEND). flags are the new fd's flags (O_CLOEXEC).
func (l *Listener) AddFD(id uint64, src FD, newFDFlags uint32, send bool) (int, error) {
	a := addfdRaw{ID: id, SrcFD: uint32(src), NewFDFlags: newFDFlags}
	if send {
		a.Flags |= unix.SECCOMP_ADDFD_FLAG_SEND
	}
	n, err := addFD(l.fd, &a)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			l.answered(id)
			return -1, ErrGone
		}
		return -1, os.NewSyscallError("ioctl(SECCOMP_IOCTL_NOTIF_ADDFD)", err)
	}
	if send {
		l.answered(id)
	}
	return n, nil
}

// answered frees notification id's journal slot: it was answered, or its
// caller is gone. Only after the kernel took the answer: a supervisor that
// dies before leaves the slot for the next one, which finds the id still
// valid; after, the id is no longer valid and Resume drops it.
func (l *Listener) answered(id uint64) {
	if l.journal != nil {
		l.journal.Free(id)
	}
}

// Shutdown makes a pending or future Receive return ErrClosed. It may be
// called from any goroutine, more than once.
func (l *Listener) Shutdown() {
	l.stopOnce.Do(func() { close(l.stopped) })
	// One byte on the stop pipe wakes the poll in Receive. The write is
	// made on the raw fd, which os.Pipe left non-blocking: a full pipe
	// (EAGAIN) means a wake-up is already pending, which is enough. (A
	// write deadline of now, as before, fails every write before it is
	// tried, so no Receive blocked in poll was ever woken.)
	rc, err := l.wake.SyscallConn()
	if err != nil {
		return // the pipe is closed: so is the listener
	}
	//nolint:errcheck // nothing to do on failure: EAGAIN is a pending wake-up, EBADF a closed listener
	rc.Write(func(fd uintptr) bool {
		unix.Write(int(fd), []byte{0}) //nolint:errcheck // as above
		return true
	})
}

// Close closes the listener. Call it after the goroutine that calls
// Receive has returned (Shutdown first). Pending and future notifications
// then fail with ENOSYS in the target.
func (l *Listener) Close() error {
	return errors.Join(l.wake.Close(), l.stop.Close(), l.f.Close())
}
