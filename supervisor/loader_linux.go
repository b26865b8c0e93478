//go:build linux

package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"

	"kfv/seccompnotify"
)

// loaderArg is argv[1] of the re-executed kfv binary that loads the filter
// and execs QEMU. It is not a user-facing subcommand.
const loaderArg = "__kfv_loader"

// loaderEnv is added to the loader's environment (never to QEMU's):
// without asynchronous preemption the Go runtime sends no SIGURG to the
// loading thread between seccomp() and execve().
const loaderEnv = "GODEBUG=asyncpreemptoff=1"

func init() {
	if IsLoader() {
		// init runs on the main goroutine, locked to the main thread:
		// keep it there, so the thread that loads the filter is the
		// thread group leader and the one that execs.
		runtime.LockOSThread()
	}
}

// IsLoader reports whether this process was started as the loader.
func IsLoader() bool { return len(os.Args) > 1 && os.Args[1] == loaderArg }

// loaderConfig is what the supervisor sends the loader over a pipe.
type loaderConfig struct {
	Path string   `json:"path"`
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Prog []byte   `json:"prog"` // struct sock_filter array
	// PIDSlots are instructions to fill with the loader's own pid, which
	// becomes QEMU's (seccompnotify.PatchPID).
	PIDSlots []int `json:"pid_slots"`
	// Landlock is the wall the loader builds around itself before it
	// loads the filter and execs; nil builds none.
	Landlock *landlockPlan `json:"landlock,omitempty"`
	// Drop is the user QEMU runs as (privdrop_linux.go); nil keeps the
	// loader's credentials.
	Drop *credDrop `json:"drop,omitempty"`
}

// loaderStatus is what the loader writes back when it fails. Success is
// the status pipe closing at exec (it is close-on-exec) with nothing
// written.
type loaderStatus struct {
	Code int    `json:"code"` // exit code kfv-run should return
	Msg  string `json:"msg"`
}

// LoaderMain is the loader: it reads its configuration, loads the filter
// and execs QEMU. It never returns. argv: kfv-run __kfv_loader CFGFD STATUSFD.
func LoaderMain() {
	code, err := loaderRun()
	msg := "kfv-run: " + err.Error()
	if len(os.Args) > 3 {
		if fd, perr := strconv.Atoi(os.Args[3]); perr == nil {
			b, merr := json.Marshal(loaderStatus{Code: code, Msg: msg})
			if merr == nil {
				if _, werr := unix.Write(fd, b); werr == nil {
					os.Exit(code)
				}
			}
		}
	}
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(code)
}

func loaderRun() (int, error) {
	parent := os.Getppid()
	if len(os.Args) != 4 {
		return exitLaunch, errors.New("loader: usage: __kfv_loader CFGFD STATUSFD")
	}
	cfgFD, err1 := strconv.Atoi(os.Args[2])
	statusFD, err2 := strconv.Atoi(os.Args[3])
	if err := errors.Join(err1, err2); err != nil {
		return exitLaunch, fmt.Errorf("loader: bad fd argument: %w", err)
	}
	// The status pipe must close at exec: that is how the supervisor
	// learns the exec succeeded.
	if _, err := unix.FcntlInt(uintptr(statusFD), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return exitLaunch, fmt.Errorf("loader: status fd: %w", os.NewSyscallError("fcntl", err))
	}
	f := os.NewFile(uintptr(cfgFD), "kfv-loader-config")
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return exitLaunch, fmt.Errorf("loader: read configuration: %w", err)
	}
	var cfg loaderConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return exitLaunch, fmt.Errorf("loader: decode configuration: %w", err)
	}
	prog, err := seccompnotify.DecodeProg(cfg.Prog)
	if err != nil {
		return exitLaunch, fmt.Errorf("loader: %w", err)
	}
	// exec keeps the pid: the loader's pid is QEMU's.
	if prog, err = seccompnotify.PatchPID(prog, cfg.PIDSlots, os.Getpid()); err != nil {
		return exitLaunch, fmt.Errorf("loader: %w", err)
	}
	spec := &seccompnotify.ExecSpec{Path: cfg.Path, Argv: cfg.Argv, Env: cfg.Env, Prog: prog}
	if err := setLimits(); err != nil {
		return exitLaunch, fmt.Errorf("loader: %w", err)
	}
	ruleset := -1
	if cfg.Landlock != nil {
		// Built before the drop, which may take away the way to the
		// files its rules name; enforced after it, before the filter:
		// once that is loaded, Landlock's own calls would be QEMU's,
		// judged by the profile.
		if ruleset, err = cfg.Landlock.ruleset(); err != nil {
			return exitLaunch, fmt.Errorf("loader: %w", err)
		}
	}
	if cfg.Drop != nil {
		// Opened while still root: QEMU's user may not be able to
		// traverse the directories above QEMU's binary (a tree under
		// /root); the exec then goes through this fd.
		fd, err := unix.Open(cfg.Path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return execExitCode(errnoOf(err)), fmt.Errorf("loader: open %s: %w", cfg.Path, err)
		}
		dir, err := unix.Open(filepath.Dir(cfg.Path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return exitLaunch, fmt.Errorf("loader: open %s: %w", filepath.Dir(cfg.Path), err)
		}
		if err := cfg.Drop.apply(parent); err != nil {
			return exitLaunch, fmt.Errorf("loader: run QEMU as %s: %w", cfg.Drop.User, err)
		}
		// By path when the user reaches it; else by name in its
		// directory when the user may search that one: both keep
		// QEMU's name (comm) on every kernel. Through the binary's own
		// fd otherwise.
		base := filepath.Base(cfg.Path)
		switch {
		case unix.Access(cfg.Path, unix.X_OK) == nil:
			unix.Close(fd)
			unix.Close(dir)
		case unix.Faccessat(dir, base, unix.X_OK, 0) == nil:
			unix.Close(fd)
			spec.ByFD, spec.FD, spec.Name = true, dir, base
		default:
			unix.Close(dir)
			spec.ByFD, spec.FD = true, fd
		}
	}
	if ruleset >= 0 {
		if err := enforceRuleset(ruleset); err != nil {
			return exitLaunch, fmt.Errorf("loader: %w", err)
		}
	}
	err = seccompnotify.LoadAndExec(spec)
	var ee *seccompnotify.ExecError
	if errors.As(err, &ee) {
		return execExitCode(ee.Err), err
	}
	return exitLaunch, err
}

// errnoOf is the errno under err, or EIO.
func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.EIO
}

// execExitCode maps an exec failure to the shell's convention.
func execExitCode(e unix.Errno) int {
	if e == unix.ENOENT {
		return exitNotFound
	}
	return exitNotExec
}
