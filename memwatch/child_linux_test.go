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

// childMapEnv names a file the child maps read-only and private at
// start (it prints "mapped ADDR" after its target).
const childMapEnv = "KFV_MEMWATCH_TEST_MAP"

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
	if p := os.Getenv(childMapEnv); p != "" {
		// A file mapped read-only and private, as a library's rodata.
		b, err := os.ReadFile(p)
		if err != nil {
			fmt.Printf("read %s: %v\n", p, err)
			os.Exit(1)
		}
		f, err := os.Open(p)
		if err != nil {
			fmt.Printf("open %s: %v\n", p, err)
			os.Exit(1)
		}
		m, err := unix.Mmap(int(f.Fd()), 0, len(b), unix.PROT_READ, unix.MAP_PRIVATE)
		if err != nil {
			fmt.Printf("mmap %s: %v\n", p, err)
			os.Exit(1)
		}
		fmt.Printf("mapped %x\n", reflect.ValueOf(&m[0]).Pointer())
	}
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
	cmd     *exec.Cmd
	lines   chan string
	target  uint64
	stopped bool
}

// stop kills the child and waits for it.
func (c *child) stop(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	_ = c.cmd.Wait() // killed: an error by design
	c.stopped = true
}

func startChild(t *testing.T) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return startChildOf(t, exe)
}

// startChildOf starts exe (a copy of this test binary) as the child,
// with env added to its environment.
func startChildOf(t *testing.T, exe string, env ...string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(exe), lines: make(chan string, 1024)}
	c.cmd.Env = append(append(os.Environ(), childEnv+"=1"), env...)
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.stopped {
			return
		}
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

func init() {
	// The tests make and change files and look at them at once; the
	// tests of the window set it themselves.
	settleWindow = 0
}
