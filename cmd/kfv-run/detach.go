package main

import (
	"fmt"
	"io"
	"log/syslog"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"kfv/resources"
	"kfv/supervisor"
)

// QEMU's -daemonize under kfv-run (supervisor/daemonize_linux.go): the
// process the caller started waits and exits as QEMU's first process does;
// a detached copy of kfv-run, started with the same arguments, supervises
// QEMU and its daemon.

// daemonizes reports whether QEMU's command line asks for -daemonize.
func daemonizes(args []string, cwd string) bool {
	if len(args) < 2 {
		return false
	}
	set, err := resources.FromArgs(args[1:], cwd, resources.HostFS())
	return err == nil && set.Daemonize
}

// runForeground is the process the caller waits for: it exits with the
// status of QEMU's first process (0 once the daemon is ready).
func runForeground() int {
	status, err := supervisor.RunDetached()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfv-run: "+err.Error())
	}
	return status
}

// detachedOutput is where the detached supervisor's events and warnings
// go: the caller's stderr (or stdout) until QEMU's first process exits,
// then, since the caller may wait for the end of that pipe, the system
// log. An events file stays the events file.
type detachedOutput struct {
	mu  sync.Mutex
	w   io.Writer
	log *syslog.Writer // nil: no system log
}

func (o *detachedOutput) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.w == nil {
		return len(b), nil
	}
	return o.w.Write(b)
}

// newDetachedOutput opens the system log, if there is one.
func newDetachedOutput(w io.Writer) *detachedOutput {
	o := &detachedOutput{w: w}
	if l, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_NOTICE, "kfv-run"); err == nil {
		o.log = l
	}
	return o
}

// detach lets go of the caller's stdio: fds 0 to 2 become /dev/null,
// and what went to the std streams goes to the system log (toLog).
func (o *detachedOutput) detach(toLog bool) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if toLog {
		o.w = nil
		if o.log != nil {
			o.w = o.log
		}
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer null.Close()
	for fd := 0; fd <= 2; fd++ {
		if err := unix.Dup2(int(null.Fd()), fd); err != nil {
			return fmt.Errorf("dup2 %s to fd %d: %w", os.DevNull, fd, err)
		}
	}
	return nil
}

// logErr writes an error to the system log (nothing without one).
func (o *detachedOutput) logErr(msg string) {
	if o.log != nil {
		o.log.Err(msg)
	}
}
