// Package qmp is a small client for the QEMU Machine Protocol over a unix
// socket: the capabilities handshake, commands matched to their answers by
// id, asynchronous events, and passing an fd with getfd (SCM_RIGHTS).
//
// kfv talks to QEMU through its own private monitor (a -qmp socket kfv adds
// in a directory only it can reach) to carry out reactions (stop, cont,
// set_link, device_del, migrate to an fd). A client of our own, because
// the maintained Go QMP libraries either lack fd passing or pull in a
// libvirt binding; this one is a few hundred lines with its own tests.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Error is an error QEMU answered a command with.
type Error struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *Error) Error() string { return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc) }

// Event is an asynchronous QMP event.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
	Time time.Time       `json:"-"`
}

// ErrClosed is returned once the connection is closed or lost.
var ErrClosed = errors.New("qmp connection closed")

// Client is one QMP connection. Its methods are safe for concurrent use.
type Client struct {
	conn *net.UnixConn

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	pending map[string]chan response
	nextID  uint64
	err     error // set when the reader stops

	events chan Event
	done   chan struct{}
	gate   *Gate
}

// ErrGateClosed is the error of a command refused by a closed Gate.
var ErrGateClosed = errors.New("QEMU is being stopped: no more commands")

// Gate holds a client's commands off while QEMU is being stopped. QEMU
// 7.2 can hang in its exit path when a command reaches its monitor as it
// begins to shut down (monitor_cleanup waits for the QMP dispatcher,
// which the main loop no longer runs): a command in flight when a
// termination signal arrives keeps QEMU from ever exiting. Whoever sends
// QEMU such a signal closes the gate first: Close waits for the commands
// in flight to be answered and refuses every later one.
type Gate struct {
	mu     sync.Mutex
	n      int // commands in flight
	closed bool
}

// NewGate returns an open gate.
func NewGate() *Gate { return &Gate{} }

func (g *Gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

func (g *Gate) leave() {
	g.mu.Lock()
	g.n--
	g.mu.Unlock()
}

// Close refuses every later command and waits, at most timeout, for the
// ones in flight to be answered. It reports whether none is left.
func (g *Gate) Close(timeout time.Duration) bool {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	for end := time.Now().Add(timeout); ; time.Sleep(2 * time.Millisecond) {
		g.mu.Lock()
		n := g.n
		g.mu.Unlock()
		if n == 0 {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

type response struct {
	Return json.RawMessage `json:"return"`
	Error  *Error          `json:"error"`
	ID     string          `json:"id"`
}

// eventQueue is how many events wait for a reader before older ones are
// dropped (the monitor must never block QEMU's answers).
const eventQueue = 256

// Dial connects to a QMP socket, waiting up to timeout for it to appear,
// reads the greeting and negotiates capabilities.
func Dial(ctx context.Context, path string, timeout time.Duration) (*Client, error) {
	return DialGated(ctx, path, timeout, nil)
}

// DialGated is Dial for a client whose commands, capability negotiation
// included, pass gate (nil: none).
func DialGated(ctx context.Context, path string, timeout time.Duration, gate *Gate) (*Client, error) {
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	var err error
	for {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "unix", path)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("connect to QMP at %s: %w", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return NewClient(ctx, conn.(*net.UnixConn), timeout, gate)
}

// NewClient speaks QMP over a connection already made (kfv's end of a
// socket pair whose other end QEMU got as a chardev): it reads the
// greeting, waiting at most timeout (0: until it comes, the connection
// ends or ctx is done), and negotiates capabilities. Commands, capability
// negotiation included, pass gate (nil: none). The client owns conn.
func NewClient(ctx context.Context, conn *net.UnixConn, timeout time.Duration, gate *Gate) (*Client, error) {
	c := &Client{conn: conn, pending: map[string]chan response{}, events: make(chan Event, eventQueue), done: make(chan struct{}), gate: gate}
	rd := bufio.NewReaderSize(c.conn, 64<<10)
	if timeout > 0 {
		c.conn.SetReadDeadline(time.Now().Add(timeout))
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetReadDeadline(time.Unix(1, 0)) })
	line, err := rd.ReadBytes('\n')
	if !stop() && err != nil {
		err = ctx.Err()
	}
	if err != nil {
		c.conn.Close()
		return nil, fmt.Errorf("read QMP greeting: %w", err)
	}
	var greet struct {
		QMP json.RawMessage `json:"QMP"`
	}
	if err := json.Unmarshal(line, &greet); err != nil || greet.QMP == nil {
		c.conn.Close()
		return nil, fmt.Errorf("QMP greeting %q: not a QMP server", line)
	}
	c.conn.SetReadDeadline(time.Time{})
	go c.read(rd)
	if _, err := c.Execute(ctx, "qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// read dispatches answers to their callers and events to Events.
func (c *Client) read(rd *bufio.Reader) {
	defer close(c.done)
	defer close(c.events)
	for {
		line, err := rd.ReadBytes('\n')
		if err != nil {
			c.fail(fmt.Errorf("%w: %v", ErrClosed, err))
			return
		}
		var m struct {
			response
			Event     string          `json:"event"`
			Data      json.RawMessage `json:"data"`
			Timestamp struct {
				Seconds      int64 `json:"seconds"`
				Microseconds int64 `json:"microseconds"`
			} `json:"timestamp"`
		}
		if err := json.Unmarshal(line, &m); err != nil {
			c.fail(fmt.Errorf("QMP sent %q: %w", line, err))
			return
		}
		if m.Event != "" {
			ev := Event{Name: m.Event, Data: m.Data, Time: time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)}
			select {
			case c.events <- ev:
			default: // nobody reads events: drop the oldest, keep the newest
				select {
				case <-c.events:
				default:
				}
				select {
				case c.events <- ev:
				default:
				}
			}
			continue
		}
		c.mu.Lock()
		ch := c.pending[m.ID]
		delete(c.pending, m.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- m.response
		}
	}
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
}

// Events delivers asynchronous events (STOP, RESUME, DEVICE_DELETED...).
// It is closed when the connection ends. Events nobody reads are dropped,
// oldest first, beyond a small queue.
func (c *Client) Events() <-chan Event { return c.events }

// Execute runs a command and returns its "return" value. A QMP error is
// an *Error.
func (c *Client) Execute(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	return c.execute(ctx, cmd, args, nil)
}

// SendFD passes f to QEMU under name with getfd (the fd travels as
// SCM_RIGHTS with the command), for commands such as migrate "fd:NAME".
func (c *Client) SendFD(ctx context.Context, name string, f *os.File) error {
	_, err := c.execute(ctx, "getfd", map[string]string{"fdname": name}, f)
	return err
}

func (c *Client) execute(ctx context.Context, cmd string, args any, f *os.File) (json.RawMessage, error) {
	if c.gate != nil {
		if !c.gate.enter() {
			return nil, fmt.Errorf("qmp %s: %w", cmd, ErrGateClosed)
		}
		defer c.gate.leave()
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	id := "kfv-" + strconv.FormatUint(c.nextID, 10)
	ch := make(chan response, 1)
	c.pending[id] = ch
	c.mu.Unlock()

	req := map[string]any{"execute": cmd, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		c.forget(id)
		return nil, fmt.Errorf("qmp %s: encode arguments: %w", cmd, err)
	}
	b = append(b, '\n')
	if err := c.write(b, f); err != nil {
		c.forget(id)
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			c.mu.Lock()
			err := c.err
			c.mu.Unlock()
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		if r.Error != nil {
			r.Error.Command = cmd
			return nil, r.Error
		}
		return r.Return, nil
	case <-ctx.Done():
		c.forget(id)
		return nil, fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
}

func (c *Client) forget(id string) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (c *Client) write(b []byte, f *os.File) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if f == nil {
		_, err := c.conn.Write(b)
		return err
	}
	oob := unix.UnixRights(int(f.Fd()))
	n, oobn, err := c.conn.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return err
	}
	if n != len(b) || oobn != len(oob) {
		return fmt.Errorf("short write of a command with an fd (%d/%d bytes, %d/%d control)", n, len(b), oobn, len(oob))
	}
	return nil
}

// Close closes the connection.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

// Status is query-status's answer.
type Status struct {
	Status  string `json:"status"`
	Running bool   `json:"running"`
}

// QueryStatus runs query-status.
func (c *Client) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	r, err := c.Execute(ctx, "query-status", nil)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(r, &s); err != nil {
		return s, fmt.Errorf("qmp query-status: %w", err)
	}
	return s, nil
}
