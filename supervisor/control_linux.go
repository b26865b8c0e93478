//go:build linux

package supervisor

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/orch"
	"kfv/seccompnotify"
)

// kfv-run's control: each supervisor listens on a unix socket of its
// own, ControlDir()/VM.PID.sock (PID is the supervisor's), in kfv's
// runtime directory, which only kfv's user may enter. kfv-run status and
// kfv-run reload find a VM's supervisor there. A request is one JSON
// line, ControlRequest; the answer one JSON line, ControlReply. Only
// root and kfv's own user are answered, and never QEMU.
//
// The server blocks in accept: an idle supervisor pays nothing for it.

// ControlRequest is what kfv-run asks a supervisor.
type ControlRequest struct {
	// Op is "status" (who are you) or "reload" (apply the profile as it
	// is on disk now).
	Op string `json:"op"`
}

// ControlReply is a supervisor's answer.
type ControlReply struct {
	OK      bool   `json:"ok"`
	VM      string `json:"vm"`
	PID     int    `json:"pid"`      // the supervisor's
	QEMUPID int    `json:"qemu_pid"` // QEMU's now (0 between restarts)
	Version string `json:"version"`
	Profile string `json:"profile"`
	// Detail says what was done, or why not.
	Detail string `json:"detail"`
}

// ControlDir is where the control sockets of this user's supervisors
// are.
func ControlDir() string { return filepath.Join(runtimeDir(), "control") }

// ControlDirs are the directories where kfv-run looks for supervisors:
// its own user's, and as root those of every user (the emulator model's
// supervisors run as libvirt's QEMU user).
func ControlDirs() []string {
	dirs := []string{ControlDir()}
	if os.Geteuid() != 0 {
		return dirs
	}
	for _, pat := range []string{"/run/user/*/kfv/control", filepath.Join(os.TempDir(), "kfv-*", "control")} {
		m, _ := filepath.Glob(pat)
		dirs = append(dirs, m...)
	}
	return dirs
}

// controlName is the socket name of the supervisor pid of vm.
func controlName(vm string, pid int) string {
	safe := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, vm)
	if len(safe) > 48 { // sun_path is 108 bytes
		safe = safe[:48]
	}
	if safe == "" {
		safe = "vm"
	}
	return safe + "." + strconv.Itoa(pid) + ".sock"
}

// socketPID is the supervisor pid a control socket's name gives, or 0.
func socketPID(name string) int {
	name, ok := strings.CutSuffix(name, ".sock")
	if !ok {
		return 0
	}
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return 0
	}
	pid, err := strconv.Atoi(name[i+1:])
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// removeStaleControl removes the sockets of supervisors that are gone.
func removeStaleControl(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		pid := socketPID(e.Name())
		if pid == 0 || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// control serves one supervisor's socket.
type control struct {
	ln      *net.UnixListener
	path    string
	vm      string
	version string
	// qemu is QEMU's pid now, 0 when none runs.
	qemu func() int
	// profile is the source of the profile in force.
	profile func() string
	// reload applies the profile as it is on disk; it says what it did.
	reload func() (string, error)
	wg     sync.WaitGroup
}

// startControl listens on the VM's control socket.
func startControl(vm, version string, qemu func() int, profile func() string, reload func() (string, error)) (*control, error) {
	dir := ControlDir()
	if err := openRuntimeDir(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("kfv's control directory: %w", err)
	}
	removeStaleControl(dir)
	path := filepath.Join(dir, controlName(vm, os.Getpid()))
	os.Remove(path) // a socket of a pid reused from a dead supervisor
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("kfv's control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	c := &control{ln: ln, path: path, vm: vm, version: version, qemu: qemu, profile: profile, reload: reload}
	c.wg.Add(1)
	go c.serve()
	return c, nil
}

// close stops serving and removes the socket.
func (c *control) close() {
	if c == nil {
		return
	}
	c.ln.Close()
	c.wg.Wait()
}

func (c *control) serve() {
	defer c.wg.Done()
	for {
		conn, err := c.ln.AcceptUnix()
		if err != nil {
			return // closed
		}
		c.answer(conn) // one at a time: a reload is never run twice at once
	}
}

// controlTimeout bounds a client's request and a reload's answer.
const controlTimeout = 30 * time.Second

func (c *control) answer(conn *net.UnixConn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(controlTimeout))
	reply := ControlReply{VM: c.vm, PID: os.Getpid(), QEMUPID: c.qemu(), Version: c.version, Profile: c.profile()}
	write := func() {
		b, _ := json.Marshal(reply)
		conn.Write(append(b, '\n'))
	}
	if why := c.refusePeer(conn, reply.QEMUPID); why != "" {
		reply.Detail = why
		write()
		return
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return
	}
	var req ControlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		reply.Detail = "bad request: " + err.Error()
		write()
		return
	}
	switch req.Op {
	case "status":
		reply.OK = true
	case "reload":
		reply.Detail, err = c.reload()
		reply.OK = err == nil
		if err != nil {
			reply.Detail = err.Error()
		}
		reply.Profile = c.profile()
	default:
		reply.Detail = fmt.Sprintf("unknown op %q: want status or reload", req.Op)
	}
	write()
}

// refusePeer says why the client may not command this supervisor: only
// root and kfv's own user may, and never QEMU (which, as kfv-run's
// caller's user when kfv is not root, passes the uid test).
func (c *control) refusePeer(conn *net.UnixConn, qemuPID int) string {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err.Error()
	}
	var cred *unix.Ucred
	var cerr error
	raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cerr != nil {
		return "SO_PEERCRED: " + cerr.Error()
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Sprintf("uid %d may not command this supervisor", cred.Uid)
	}
	if qemuPID > 0 && int(cred.Pid) == qemuPID {
		return "QEMU may not command its supervisor"
	}
	if int(cred.Pid) == os.Getpid() {
		// A connect kfv performed for QEMU has kfv as its peer: the
		// supervisor never commands itself, so that is QEMU.
		return "a connection kfv made for QEMU may not command the supervisor"
	}
	return ""
}

// reloadPolicy applies to the running VM the profile that cfg.Reload
// prepares anew from disk (the same profile and overlay, for the same
// command line): the verdict rules, detectors and ladder. It refuses, and
// leaves the running policy in force, a profile that does not load, and
// one whose kernel part differs from the filter QEMU runs under (a filter
// cannot be taken off a running process), whose Landlock setting differs
// (the wall is built at exec) or which changes the daemonize model. What
// the running rules counted (limits, daemonizing forks, QEMU's code
// ranges) carries over (orch.Engine.Inherit); the detectors' windows and
// the ladder's steps start afresh.
func reloadPolicy(cfg *Config, cur *atomic.Pointer[session]) (string, error) {
	if cfg.Reload == nil || cfg.Policy.runtime == nil {
		return "", errors.New("this VM's policy cannot be reloaded (its supervisor was started without what a reload needs)")
	}
	s := cur.Load()
	if s == nil {
		return "", errors.New("no QEMU runs")
	}
	refuse := func(err error) (string, error) {
		s.emit(&event.Event{Kind: event.KindError, Source: "supervisor", Detail: "reload refused: " + err.Error() + "; the running policy stays in force"})
		return "", fmt.Errorf("%w; the running policy stays in force", err)
	}
	old := cfg.Policy.profile()
	next, err := cfg.Reload()
	if err != nil {
		return refuse(err)
	}
	nf, err := seccompnotify.Compile(next.Profile)
	if err != nil {
		return refuse(fmt.Errorf("compile profile %s: %w", next.Profile.Source, err))
	}
	if why := filterChange(s.filter, nf); why != "" {
		return refuse(fmt.Errorf("profile %s changes what the kernel filter lets QEMU do or sends to kfv (%s): a seccomp filter cannot be taken off a running QEMU; restart the VM to apply it", next.Profile.Source, why))
	}
	if next.Profile.Landlock != old.Landlock {
		return refuse(fmt.Errorf("profile %s sets landlock = %q (running: %q): QEMU's wall is built when it starts; restart the VM to apply it", next.Profile.Source, next.Profile.Landlock, old.Landlock))
	}
	if next.Daemonize != cfg.Policy.Daemonize {
		return refuse(fmt.Errorf("profile %s changes whether QEMU may daemonize: restart the VM to apply it", next.Profile.Source))
	}
	vo, err := orch.NewVO(next.Profile, nil)
	if err != nil {
		return refuse(fmt.Errorf("profile %s: vertical orchestrator: %w", next.Profile.Source, err))
	}
	if err := s.plane.swapVO(vo); err != nil {
		return refuse(err)
	}
	cfg.Policy.runtime.Swap(next.runtime.Profile())
	cfg.Policy.setProfile(next.Profile)
	detail := fmt.Sprintf("reload: profile %s applied to the running VM: %d verdict rules, %d detectors, %d correlation rules; the detectors' windows and the ladder start afresh, limits and admissions carry over", next.Profile.Source, len(next.Profile.Rules), len(next.Profile.Detectors), len(next.Profile.Correlate))
	s.emit(&event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: detail})
	return detail, nil
}

// filterChange says how the filter of next differs from the running
// one, or "" when QEMU's filter is what next would load (QEMU's pid
// aside, which fills the same slots).
func filterChange(running, next *seccompnotify.Filter) string {
	if len(running.Prog) != len(next.Prog) {
		return fmt.Sprintf("%d BPF instructions, running %d", len(next.Prog), len(running.Prog))
	}
	pid := map[int]bool{}
	for _, i := range running.PIDSlots {
		pid[i] = true
	}
	n := 0
	for i := range next.Prog {
		a, b := running.Prog[i], next.Prog[i]
		if a.Code != b.Code || a.Jt != b.Jt || a.Jf != b.Jf || a.K != b.K && !pid[i] {
			n++
		}
	}
	if n > 0 {
		return fmt.Sprintf("%d of %d BPF instructions differ", n, len(next.Prog))
	}
	return ""
}
