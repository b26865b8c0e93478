package integration

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kfv/guest"
)

// openPty opens a pseudo-terminal pair: the master, read by the test,
// and the terminal kfv-run writes to.
func openPty(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open the pty's terminal: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// runAtTerminal runs kfv-run with its stderr on a terminal and returns
// its exit status and what the terminal showed.
func runAtTerminal(t *testing.T, argv []string) (int, string) {
	t.Helper()
	m, tty := openPty(t)
	cmd := exec.Command(argv[0], argv[1:]...)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, tty
	var shown lockedBuffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(&shown, m) // ends with EIO once every writer closed the terminal
	}()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close() // kfv-run and QEMU hold it now
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	timer.Stop()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	status := 0
	if ee, ok := err.(*exec.ExitError); ok {
		status = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return status, strings.ReplaceAll(shown.String(), "\r\n", "\n")
}

// TestTerminalOutput: typed at a terminal, kfv-run shows QEMU's own
// messages and one readable line per denial, no JSON; with stderr in a
// file the events are JSON lines, as a program reading them expects.
func TestTerminalOutput(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	img := rawGuest(t, guest.RawOptions{})
	dir := t.TempDir()

	t.Run("missing-image", func(t *testing.T) {
		missing := filepath.Join(dir, "no-such-disk.img")
		argv := append([]string{kfvRun, "--", qemu}, append(guest.RawArgs(img, "tcg"), "-drive", "file="+missing+",if=none,id=d0")...)
		st, shown := runAtTerminal(t, argv)
		t.Logf("exit %d, terminal:\n%s", st, shown)
		if st == 0 || st >= 125 {
			t.Errorf("exit %d: want QEMU's own failure status", st)
		}
		if !strings.Contains(shown, missing) || !strings.Contains(shown, "qemu-system-x86_64") {
			t.Errorf("QEMU's error for the missing image is not on the terminal")
		}
		if strings.Contains(shown, `{"time"`) {
			t.Errorf("JSON on the terminal")
		}
		if strings.Contains(shown, "ERROR") {
			t.Errorf("kfv reports an error of its own for QEMU's failure to start")
		}
	})

	// A split VMDK image: the built-in profile denies its extent
	// (TestLearnRoundTrip); the denial must be readable.
	disk := splitVMDK(t, dir)
	qargs := append(guest.RawArgs(img, "tcg"), "-drive", "file="+disk+",if=none,id=d0")
	t.Run("denial", func(t *testing.T) {
		st, shown := runAtTerminal(t, append([]string{kfvRun, "--mode", "audit", "--", qemu}, qargs...))
		t.Logf("exit %d, terminal:\n%s", st, shown)
		if st != guest.RawExitStatus(0) {
			t.Errorf("exit %d, want the guest's %d", st, guest.RawExitStatus(0))
		}
		if !strings.Contains(shown, "DENY") || !strings.Contains(shown, "disk-f001.vmdk") {
			t.Errorf("no readable line for the denial of the extent")
		}
		if strings.Contains(shown, `{"time"`) {
			t.Errorf("JSON on the terminal")
		}
	})
	t.Run("file", func(t *testing.T) {
		log := filepath.Join(dir, "stderr.log")
		f, err := os.Create(log)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(kfvRun, append([]string{"--mode", "audit", "--", qemu}, qargs...)...)
		cmd.Stderr = f
		err = cmd.Run()
		f.Close()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != guest.RawExitStatus(0) {
			t.Errorf("run: %v", err)
		}
		b, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(`{"time"`)) || !bytes.Contains(b, []byte(`"verdict":"deny"`)) {
			t.Errorf("stderr in a file holds no JSON events:\n%s", b)
		}
	})
}
