package qmpproxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"kfv/resources"
)

// Command is one QMP command from a manager, as the proxy saw it before
// forwarding it.
type Command struct {
	// Monitor is the monitor the manager used.
	Monitor *Monitor
	// Conn numbers the manager's connection (per Proxy, from 1), so that
	// commands of one session can be told apart.
	Conn uint64
	// Name is the command ("execute" or "exec-oob"). It is empty for an
	// object QEMU will refuse as a command (no or two command members, a
	// non-string name, non-object arguments).
	Name string
	// OOB is set for exec-oob.
	OOB bool
	// ID is the command's "id" member as sent, nil when it has none.
	ID json.RawMessage
	// Args is the "arguments" member, nil when absent.
	Args json.RawMessage
	// FDs are the file descriptors that came with the command
	// (SCM_RIGHTS, for getfd and add-fd). They stay open only while
	// OnCommand runs; dup one to keep it.
	FDs []*os.File
	// Needs is what the command names on the host (resources.FromQMP);
	// nil when Name is empty or NeedsErr is set.
	Needs *resources.Needs
	// NeedsErr is why Needs could not be worked out: the arguments are
	// malformed where it matters, and QEMU will most likely refuse them
	// too. Its files are then admitted by no one, so kfv's file policy
	// denies what QEMU would open.
	NeedsErr error
}

// Config is what a Proxy needs.
type Config struct {
	// Cwd is QEMU's working directory, against which relative names in
	// commands are resolved. It must be absolute.
	Cwd string
	// FS is the host's file system rooted at "/" (resources.HostFS), read
	// for the qcow2 backing chains of images a command opens; nil reads
	// nothing.
	FS fs.FS
	// OnCommand is called for each command before it is forwarded. When
	// it returns an error, the command is not forwarded, and the manager
	// gets a QMP error (class GenericError, desc "kfv: " and the error,
	// the command's id). It runs on the connection's goroutine, and the
	// command (and every later one of that connection) waits for it: it
	// must be fast, only recording Needs in memory. It may be called
	// concurrently for different connections. nil forwards everything.
	OnCommand func(c *Command) error
	// OnAnswer, when set, is called with QEMU's answer to each forwarded
	// command ({"return": …} or {"error": …}), after the answer has been
	// passed to the manager: a command's effects on QEMU happen between
	// OnCommand and OnAnswer. Must be fast.
	OnAnswer func(c *Command, answer json.RawMessage)
	// OnEvent, when set, is called with each event QEMU sends, after it
	// has been passed to the manager. Must be fast.
	OnEvent func(m *Monitor, event json.RawMessage)
	// OnError, when set, is told what went wrong on a connection (QEMU's
	// private socket not there, a write failing); the connection is then
	// closed. Clean disconnects are not errors.
	OnError func(m *Monitor, err error)
	// DialTimeout bounds how long a manager's connection waits for QEMU's
	// private socket to appear (QEMU creates it early in start-up).
	// Default 30 s.
	DialTimeout time.Duration
}

// Limits.
const (
	// maxCommand bounds one command from a manager. QMP commands are
	// small; the largest are a few kilobytes of blockdev-add.
	maxCommand = 4 << 20
	// maxAnswer bounds one object from QEMU before the proxy stops
	// framing and passes bytes through (query-qmp-schema is about 200 KiB).
	maxAnswer = 16 << 20
	// maxFDs is how many fds one recvmsg may carry (the kernel's
	// SCM_MAX_FD). QEMU itself takes at most 16 per message.
	maxFDs = 253
	// maxPendingFDs bounds fds held for a command not yet complete.
	maxPendingFDs = 4 * maxFDs
	// readSize is one read.
	readSize = 64 << 10
)

// ErrClosed is returned by Serve once the Proxy is closed.
var ErrClosed = errors.New("qmp proxy closed")

// Proxy serves managers on their monitor sockets and connects each of
// their connections to QEMU's private one.
type Proxy struct {
	cfg      Config
	nextConn atomic.Uint64
	done     chan struct{}
	wg       sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]bool
	conns     map[net.Conn]bool
}

// New returns a Proxy; Serve starts serving a monitor.
func New(cfg Config) (*Proxy, error) {
	if !filepath.IsAbs(cfg.Cwd) {
		return nil, fmt.Errorf("start qmp proxy: working directory %q is not absolute", cfg.Cwd)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 30 * time.Second
	}
	return &Proxy{cfg: cfg, done: make(chan struct{}), listeners: map[net.Listener]bool{}, conns: map[net.Conn]bool{}}, nil
}

// Listen opens the manager's side of m: a unix socket listening on
// m.Path (a stale socket file there is removed first, as QEMU does), or,
// when m.FD >= 0, the inherited listening socket given as inherited (the
// file the supervisor holds for QEMU's fd m.FD). Listen duplicates
// inherited; the caller closes its copy, and must keep fd m.FD out of
// QEMU, since QEMU now listens on m.Private.
func Listen(m Monitor, inherited *os.File) (net.Listener, error) {
	if !m.Proxied() {
		return nil, fmt.Errorf("listen for monitor %s: not proxied: %s", m.Option, m.Skip)
	}
	if m.FD >= 0 {
		if inherited == nil {
			return nil, fmt.Errorf("listen for monitor %s: no file for inherited fd %d", m.Option, m.FD)
		}
		rc, err := inherited.SyscallConn()
		if err != nil {
			return nil, fmt.Errorf("listen for monitor %s: fd %d: %w", m.Option, m.FD, err)
		}
		var acc int
		var serr error
		if err := rc.Control(func(fd uintptr) {
			acc, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		}); err != nil {
			return nil, fmt.Errorf("listen for monitor %s: fd %d: %w", m.Option, m.FD, err)
		}
		if serr != nil {
			return nil, fmt.Errorf("listen for monitor %s: fd %d is not a socket: %w", m.Option, m.FD, os.NewSyscallError("getsockopt", serr))
		}
		if acc == 0 {
			return nil, fmt.Errorf("listen for monitor %s: fd %d is not a listening socket", m.Option, m.FD)
		}
		ln, err := net.FileListener(inherited)
		if err != nil {
			return nil, fmt.Errorf("listen for monitor %s: fd %d: %w", m.Option, m.FD, err)
		}
		return ln, nil
	}
	if !strings.HasPrefix(m.Path, "@") {
		if fi, err := os.Lstat(m.Path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if err := os.Remove(m.Path); err != nil {
				return nil, fmt.Errorf("listen for monitor %s: remove stale socket: %w", m.Option, err)
			}
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: m.Path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen for monitor %s: %w", m.Option, err)
	}
	return ln, nil
}

// Serve accepts managers' connections on ln (from Listen) for monitor m
// until Close, giving each its own connection to QEMU at m.Private. It
// returns ErrClosed after Close, or why accepting failed.
func (p *Proxy) Serve(ln net.Listener, m Monitor) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errors.Join(ErrClosed, ln.Close())
	}
	p.listeners[ln] = true
	p.wg.Add(1)
	p.mu.Unlock()
	defer p.wg.Done()
	mon := &m
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.isClosed() {
				return ErrClosed
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				p.report(mon, fmt.Errorf("accept on monitor %s: %w", m.Option, err))
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accept on monitor %s: %w", m.Option, err)
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			p.report(mon, fmt.Errorf("accept on monitor %s: not a unix connection", m.Option))
			c.Close()
			continue
		}
		if !p.track(uc) {
			return ErrClosed
		}
		p.wg.Add(1)
		go p.serveConn(mon, uc)
	}
}

// Close stops serving: listeners and connections are closed, and Close
// returns once every goroutine of the proxy has ended.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	var errs []error
	for ln := range p.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("close monitor listener: %w", err))
		}
	}
	for c := range p.conns {
		c.Close() // the session reports its own end
	}
	p.mu.Unlock()
	p.wg.Wait()
	return errors.Join(errs...)
}

func (p *Proxy) isClosed() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// track registers a connection for Close; false once closed (c is then
// closed).
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) report(m *Monitor, err error) {
	if p.cfg.OnError != nil {
		p.cfg.OnError(m, err)
	}
}

// dial connects to QEMU's private socket, waiting for it to appear.
func (p *Proxy) dial(path string) (*net.UnixConn, error) {
	deadline := time.Now().Add(p.cfg.DialTimeout)
	for {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to QEMU's monitor at %s: %w", path, err)
		}
		select {
		case <-p.done:
			return nil, ErrClosed
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// serveConn proxies one manager connection.
func (p *Proxy) serveConn(m *Monitor, client *net.UnixConn) {
	defer p.wg.Done()
	defer p.untrack(client)
	qemu, err := p.dial(m.Private)
	if err != nil {
		if !errors.Is(err, ErrClosed) {
			p.report(m, err)
		}
		return
	}
	if !p.track(qemu) {
		return
	}
	defer p.untrack(qemu)
	s := &session{p: p, m: m, id: p.nextConn.Add(1), client: client, qemu: qemu, oob: map[string]*Command{}}
	up := make(chan struct{})
	go func() {
		defer close(up)
		if err := s.fromQEMU(); err != nil && !p.isClosed() {
			p.report(m, err)
		}
		// QEMU has gone or hung up: so does the manager's connection.
		client.Close()
	}()
	if err := s.fromClient(); err != nil && !p.isClosed() {
		p.report(m, err)
		qemu.Close()
	}
	<-up
}

// session is one manager connection and its connection to QEMU.
type session struct {
	p      *Proxy
	m      *Monitor
	id     uint64
	client *net.UnixConn
	qemu   *net.UnixConn

	// mu serialises writes to the client, so that an answer kfv makes up
	// never lands inside one of QEMU's, and guards the answer order.
	mu sync.Mutex
	// greeted is set once QEMU's greeting has reached the client:
	// nothing kfv writes may come before it.
	greeted bool
	// atLineStart is set when the last byte written to the client ended
	// a line.
	atLineStart bool
	// queue holds, in command order, in-band commands forwarded and not
	// yet answered, and refusals waiting for their turn: QMP answers
	// in-band commands in order, and a client that sends several before
	// reading must see the answers in that order.
	queue []slot
	// oob holds forwarded exec-oob commands by id: QEMU answers them as
	// soon as they are done, out of order.
	oob map[string]*Command
}

// slot is one awaited answer: a forwarded command (cmd set) or a refusal.
type slot struct {
	cmd    *Command
	answer []byte
}

// reader reads one side of a session: the bytes of each read go to a
// framer, the fds that came with them wait in pending for the frame they
// belong to.
type reader struct {
	conn     *net.UnixConn
	buf, oob []byte
	fr       *framer
	pending  []*os.File
	// who sends and what its fds wait for, for messages: "the manager"
	// and "a command", or "QEMU" and "a message".
	who, what string
}

func newReader(conn *net.UnixConn, limit int, trailing bool, who, what string) *reader {
	return &reader{conn: conn, buf: make([]byte, readSize), oob: make([]byte, unix.CmsgSpace(maxFDs*4)),
		fr: newFramer(limit, trailing), who: who, what: what}
}

// read makes one read. It returns the read's flags and its error, which
// the caller handles once the frames before it are passed on, or err,
// about the fds received, which ends the session.
func (r *reader) read(m *Monitor) (flags int, rerr, err error) {
	n, oobn, flags, _, rerr := r.conn.ReadMsgUnix(r.buf, r.oob)
	n, oobn = max(n, 0), max(oobn, 0) // failed reads may report -1
	fds, err := rights(r.oob[:oobn])
	r.pending = append(r.pending, fds...)
	if err != nil {
		return 0, nil, fmt.Errorf("monitor %s: fds from %s: %w", m.Option, r.who, err)
	}
	if len(r.pending) > maxPendingFDs {
		return 0, nil, fmt.Errorf("monitor %s: %s sent more than %d fds without %s", m.Option, r.who, maxPendingFDs, r.what)
	}
	r.fr.push(r.buf[:n])
	return flags, rerr, nil
}

// frames returns the frames complete so far.
func (r *reader) frames() []frame {
	var frames []frame
	for {
		f, ok := r.fr.next()
		if !ok {
			return frames
		}
		frames = append(frames, f)
	}
}

// takeFDs returns the fds waiting, which now belong to the caller.
func (r *reader) takeFDs() []*os.File {
	fds := r.pending
	r.pending = nil
	return fds
}

// close closes the fds nothing took.
func (r *reader) close() { closeFiles(r.pending) }

// fromClient reads the manager's commands, asks the hook, and forwards
// the ones it allows.
func (s *session) fromClient() error {
	r := newReader(s.client, maxCommand, false, "the manager", "a command")
	defer r.close()
	lost := false
	for {
		flags, rerr, err := r.read(s.m)
		if err != nil {
			return err
		}
		if flags&unix.MSG_CTRUNC != 0 {
			lost = true
		}
		frames := r.frames()
		last := -1
		for i, f := range frames {
			if f.kind == frameObject {
				last = i
			}
		}
		for i, f := range frames {
			switch f.kind {
			case frameObject:
				// Fds belong to the last command that ends in the read
				// they came with: a manager sends a command and its fds
				// in one sendmsg, and QEMU hands a read's fds to the
				// commands parsed from it.
				var cfds []*os.File
				cl := false
				if i == last {
					cfds, cl, lost = r.takeFDs(), lost, false
				}
				if err := s.command(f.obj, cfds, cl); err != nil {
					return err
				}
			case frameGarbage:
				if f.err != nil {
					if err := s.refuse(nil, f.err); err != nil {
						return err
					}
				}
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				// The manager is done sending; QEMU answers what it
				// has, then hangs up, which ends fromQEMU.
				if err := s.qemu.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
					return fmt.Errorf("monitor %s: half-close QEMU's connection: %w", s.m.Option, err)
				}
				return nil
			}
			if errors.Is(rerr, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("monitor %s: read from the manager: %w", s.m.Option, rerr)
		}
	}
}

// command handles one complete object from the manager.
func (s *session) command(obj []byte, fds []*os.File, fdsLost bool) error {
	defer closeFiles(fds)
	req, err := parseRequest(obj)
	if err != nil {
		return s.refuse(nil, err)
	}
	c := &Command{Monitor: s.m, Conn: s.id, Name: req.name, OOB: req.oob, ID: req.id, Args: req.args, FDs: fds}
	if fdsLost {
		return s.refuse(req.id, fmt.Errorf("file descriptors sent with %s were lost (more than %d in one message)", req.name, maxFDs))
	}
	if c.Name != "" {
		c.Needs, c.NeedsErr = resources.FromQMP(c.Name, c.Args, s.p.cfg.Cwd, s.p.cfg.FS)
	}
	if h := s.p.cfg.OnCommand; h != nil {
		if err := h(c); err != nil {
			return s.refuse(req.id, err)
		}
	}
	s.mu.Lock()
	// Expect the answer before QEMU can send it.
	if c.OOB && c.ID != nil {
		s.oob[idKey(c.ID)] = c
	} else {
		s.queue = append(s.queue, slot{cmd: c})
	}
	s.mu.Unlock()
	if err := send(s.qemu, obj, fds); err != nil {
		return fmt.Errorf("monitor %s: forward %s to QEMU: %w", s.m.Option, c.Name, err)
	}
	return nil
}

// idKey is a command id as a map key: compact JSON.
func idKey(id json.RawMessage) string {
	var b strings.Builder
	inStr, esc := false, false
	for _, c := range string(id) {
		switch {
		case inStr:
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
		case c == '"':
			inStr = true
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// errorAnswer is the QMP error kfv answers a refused command with.
func errorAnswer(id json.RawMessage, err error) []byte {
	desc := err.Error()
	if !strings.HasPrefix(desc, "kfv: ") {
		desc = "kfv: " + desc
	}
	type qerr struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	}
	a := struct {
		Error qerr            `json:"error"`
		ID    json.RawMessage `json:"id,omitempty"`
	}{Error: qerr{Class: "GenericError", Desc: desc}, ID: id}
	b, merr := json.Marshal(a)
	if merr != nil {
		// Only an id that is not JSON fails, and ids come from parsed input.
		return []byte(`{"error": {"class": "GenericError", "desc": "kfv: command refused"}}` + "\r\n")
	}
	return append(b, '\r', '\n')
}

// refuse answers the manager with a QMP error in the command's turn.
func (s *session) refuse(id json.RawMessage, err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, slot{answer: errorAnswer(id, err)})
	return s.flushLocked()
}

// flushLocked writes the refusals whose turn has come.
//
// Preconditions: s.mu is held.
func (s *session) flushLocked() error {
	for s.greeted && s.atLineStart && len(s.queue) > 0 && s.queue[0].cmd == nil {
		a := s.queue[0].answer
		s.queue = s.queue[1:]
		if _, err := s.client.Write(a); err != nil {
			return fmt.Errorf("monitor %s: answer the manager: %w", s.m.Option, err)
		}
	}
	return nil
}

// fromQEMU passes QEMU's output to the manager unchanged, frame by frame.
func (s *session) fromQEMU() error {
	r := newReader(s.qemu, maxAnswer, true, "QEMU", "a message")
	defer r.close()
	for {
		_, rerr, err := r.read(s.m)
		if err != nil {
			return err
		}
		frames := r.frames()
		for i, f := range frames {
			var ffds []*os.File
			if i == len(frames)-1 {
				ffds = r.takeFDs()
			}
			err := s.toClient(f, ffds)
			closeFiles(ffds)
			if err != nil {
				return err
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) || errors.Is(rerr, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("monitor %s: read from QEMU: %w", s.m.Option, rerr)
		}
	}
}

// toClient writes one frame of QEMU's to the manager, matches answers to
// commands and calls the hooks.
func (s *session) toClient(f frame, fds []*os.File) error {
	var m map[string]json.RawMessage
	if f.kind == frameObject && json.Unmarshal(f.obj, &m) != nil {
		m = nil
	}
	_, isEvent := m["event"]
	_, isReturn := m["return"]
	_, isError := m["error"]
	var answered *Command
	s.mu.Lock()
	if err := send(s.client, f.raw, fds); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("monitor %s: pass QEMU's output to the manager: %w", s.m.Option, err)
	}
	s.atLineStart = f.raw[len(f.raw)-1] == '\n'
	if f.kind == frameObject {
		s.greeted = true
	}
	if isReturn || isError {
		answered = s.answeredLocked(m["id"])
	}
	err := s.flushLocked()
	s.mu.Unlock()
	if answered != nil && s.p.cfg.OnAnswer != nil {
		s.p.cfg.OnAnswer(answered, f.obj)
	}
	if isEvent && s.p.cfg.OnEvent != nil {
		s.p.cfg.OnEvent(s.m, f.obj)
	}
	return err
}

// answeredLocked returns the command an answer with id belongs to and
// forgets it: an exec-oob command with that id, else the oldest in-band
// command awaiting its answer.
//
// Preconditions: s.mu is held.
func (s *session) answeredLocked(id json.RawMessage) *Command {
	if id != nil {
		k := idKey(id)
		if c, ok := s.oob[k]; ok {
			delete(s.oob, k)
			return c
		}
	}
	for i, sl := range s.queue {
		if sl.cmd != nil {
			s.queue = append(s.queue[:i:i], s.queue[i+1:]...)
			return sl.cmd
		}
	}
	return nil
}

// send writes b with fds attached (SCM_RIGHTS) to the first byte, so that
// the receiver gets them with the message they belong to.
func send(c *net.UnixConn, b []byte, fds []*os.File) error {
	if len(fds) == 0 {
		_, err := c.Write(b)
		return err
	}
	nums := make([]int, len(fds))
	for i, f := range fds {
		nums[i] = int(f.Fd())
	}
	n, _, err := c.WriteMsgUnix(b, unix.UnixRights(nums...), nil)
	if err != nil {
		return fmt.Errorf("sendmsg with %d fds: %w", len(fds), err)
	}
	if n < len(b) {
		// A stream socket may take part of the bytes; the fds went with
		// the first part, which the receiver reads before the rest.
		if _, err := c.Write(b[n:]); err != nil {
			return err
		}
	}
	return nil
}

// rights returns the fds in control messages as files. The kernel has
// installed them in this process already (close-on-exec: Go's ReadMsgUnix
// passes MSG_CMSG_CLOEXEC), so they are kept even when parsing fails
// half way.
func rights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var files []*os.File
	var errs []error
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("parse SCM_RIGHTS: %w", err))
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "qmp-fd"))
		}
	}
	return files, errors.Join(errs...)
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close() // a received fd; nothing to report if closing fails
	}
}
