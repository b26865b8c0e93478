package memwatch

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The watcher tests watch a child: this test binary run again with
// childEnv set. It prints the address of a function it never calls (a
// safe place to tamper with), maps a writable and executable page when
// sent SIGUSR1, and prints a tick every 20 ms.
const childEnv = "KFV_MEMWATCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		runChild()
		return
	}
	os.Exit(m.Run())
}

//go:noinline
func neverCalled(x int) int {
	for i := range 64 {
		x = x*31 + i
	}
	return x
}

func runChild() {
	// Catch SIGUSR1 before saying we are up: the test sends it as soon as
	// it reads the first line, and an uncaught SIGUSR1 ends a Go program.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	fmt.Printf("target %x\n", reflect.ValueOf(neverCalled).Pointer())
	tick := time.NewTicker(20 * time.Millisecond)
	for n := 0; ; n++ {
		select {
		case <-usr1:
			b, err := unix.Mmap(-1, 0, PageSize, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
			if err != nil {
				fmt.Printf("mmap: %v\n", err)
				os.Exit(1)
			}
			b[0] = 0xc3
			fmt.Printf("rwx %x\n", reflect.ValueOf(&b[0]).Pointer())
		case <-tick.C:
			fmt.Printf("tick %d\n", n)
		}
	}
}

// child is a running test child.
type child struct {
	cmd    *exec.Cmd
	lines  chan string
	target uint64
}

func startChild(t *testing.T) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: exec.Command(exe), lines: make(chan string, 1024)}
	c.cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.cmd.Process.Kill(); err != nil {
			t.Errorf("kill child: %v", err)
		}
		if err := c.cmd.Wait(); err == nil {
			t.Errorf("child exited cleanly after kill")
		}
	})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			default: // nobody reading ticks
			}
		}
		close(c.lines)
	}()
	line := c.next(t, "target ")
	if _, err := fmt.Sscanf(line, "target %x", &c.target); err != nil {
		t.Fatalf("child said %q: %v", line, err)
	}
	return c
}

// next returns the next line of the child starting with prefix.
func (c *child) next(t *testing.T, prefix string) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("child ended before printing %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-deadline:
			t.Fatalf("child printed no %q within 10s", prefix)
		}
	}
}

// ticking checks that the child still prints ticks.
func (c *child) ticking(t *testing.T) {
	t.Helper()
	// Drain what is buffered, then wait for a fresh tick.
	for len(c.lines) > 0 {
		<-c.lines
	}
	c.next(t, "tick ")
}
