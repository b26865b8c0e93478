package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeQMP serves one connection the way QEMU does: greeting, then one
// answer per command (with the request's id), an event before some
// answers, and getfd checks that an fd came along.
func fakeQMP(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}` + "\n"))
		buf := make([]byte, 4096)
		oob := make([]byte, 64)
		var pending []byte
		for {
			n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			gotFD := false
			if oobn > 0 {
				msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
				for _, m := range msgs {
					if fds, err := unix.ParseUnixRights(&m); err == nil && len(fds) == 1 {
						gotFD = true
						unix.Close(fds[0])
					}
				}
			}
			pending = append(pending, buf[:n]...)
			for {
				i := strings.IndexByte(string(pending), '\n')
				if i < 0 {
					break
				}
				line := pending[:i]
				pending = pending[i+1:]
				var req struct {
					Execute string `json:"execute"`
					ID      string `json:"id"`
				}
				json.Unmarshal(line, &req)
				id, _ := json.Marshal(req.ID)
				switch req.Execute {
				case "qmp_capabilities":
					c.Write([]byte(`{"return": {}, "id": ` + string(id) + "}\n"))
				case "stop":
					c.Write([]byte(`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}` + "\n"))
					c.Write([]byte(`{"return": {}, "id": ` + string(id) + "}\n"))
				case "query-status":
					c.Write([]byte(`{"return": {"status": "paused", "running": false}, "id": ` + string(id) + "}\n"))
				case "getfd":
					if gotFD {
						c.Write([]byte(`{"return": {}, "id": ` + string(id) + "}\n"))
					} else {
						c.Write([]byte(`{"error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}, "id": ` + string(id) + "}\n"))
					}
				case "hang":
					// never answered
				default:
					c.Write([]byte(`{"error": {"class": "CommandNotFound", "desc": "The command ` + req.Execute + ` has not been found"}, "id": ` + string(id) + "}\n"))
				}
			}
		}
	}()
	return sock
}

func TestClient(t *testing.T) {
	ctx := context.Background()
	c, err := Dial(ctx, fakeQMP(t), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Execute(ctx, "stop", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-c.Events():
		if ev.Name != "STOP" || ev.Time.Unix() != 1 {
			t.Errorf("event %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no STOP event")
	}
	st, err := c.QueryStatus(ctx)
	if err != nil || st.Status != "paused" || st.Running {
		t.Errorf("QueryStatus = %+v, %v", st, err)
	}
	_, err = c.Execute(ctx, "nope", nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" || qe.Command != "nope" {
		t.Errorf("unknown command: %v", err)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := c.SendFD(ctx, "mig", f); err != nil {
		t.Errorf("SendFD: %v", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := c.Execute(tctx, "hang", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("unanswered command: %v, want a deadline error", err)
	}
}

func TestDialNotQMP(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "x.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("hello\n"))
			c.Close()
		}
	}()
	if _, err := Dial(context.Background(), sock, time.Second); err == nil || !strings.Contains(err.Error(), "not a QMP server") {
		t.Errorf("Dial to a non-QMP socket: %v", err)
	}
	if _, err := Dial(context.Background(), filepath.Join(t.TempDir(), "none"), 50*time.Millisecond); err == nil {
		t.Error("Dial to a missing socket succeeded")
	}
}

func TestClosedConnection(t *testing.T) {
	ctx := context.Background()
	c, err := Dial(ctx, fakeQMP(t), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.conn.CloseRead()
	time.Sleep(50 * time.Millisecond)
	if _, err := c.Execute(ctx, "query-status", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Execute after the connection ended: %v, want ErrClosed", err)
	}
	c.Close()
	if _, ok := <-c.Events(); ok {
		t.Error("Events not closed")
	}
}

// TestGate: Close waits for a command in flight, then refuses later ones;
// a command that never gets its answer makes Close give up at its bound.
func TestGate(t *testing.T) {
	ctx := context.Background()
	g := NewGate()
	c, err := DialGated(ctx, fakeQMP(t), 5*time.Second, g)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	inFlight := make(chan error)
	go func() {
		_, err := c.Execute(hctx, "hang", nil)
		inFlight <- err
	}()
	time.Sleep(50 * time.Millisecond) // the command is on its way
	if g.Close(50 * time.Millisecond) {
		t.Error("Close reported no command in flight while one waited for its answer")
	}
	if !g.Close(5 * time.Second) {
		t.Error("Close still saw a command in flight after it ended")
	}
	<-inFlight
	if _, err := c.Execute(ctx, "query-status", nil); !errors.Is(err, ErrGateClosed) {
		t.Errorf("command after Close: %v, want ErrGateClosed", err)
	}
}
