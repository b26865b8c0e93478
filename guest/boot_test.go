package guest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests boot real QEMU. They build into KFV_GUEST_CACHE, or
// .cache/guests at the repository root, so that "make guests" and the
// tests share one cache.

func needQEMU(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots QEMU: skipped with -short")
	}
	if _, err := QEMUBinary(); err != nil {
		if os.Getenv(QEMUEnv) != "" {
			t.Fatal(err) // a QEMU was asked for by name: its absence is an error
		}
		t.Skip(err)
	}
}

func kvmUsable() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

func guestCache(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("KFV_GUEST_CACHE"); d != "" {
		return d
	}
	d, err := filepath.Abs(filepath.Join("..", ".cache", "guests"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRawBoot(t *testing.T) {
	needQEMU(t)
	dir := t.TempDir()
	for _, accel := range []string{"tcg", "kvm"} {
		t.Run(accel, func(t *testing.T) {
			if accel == "kvm" {
				if err := kvmUsable(); err != nil {
					t.Skipf("needs /dev/kvm (read-write): %v", err)
				}
			}
			for _, tc := range []struct {
				name     string
				opts     RawOptions
				wantOut  string
				maxLines int
			}{
				{"hello", RawOptions{ExitCode: 42}, DefaultRawMessage, 0},
				{"exit code 0", RawOptions{ExitCode: 0, Message: "zero\n"}, "zero\n", 0},
				{"loop", RawOptions{Loop: true, TicksPerLine: 2, ExitAfter: 3, ExitCode: 9},
					DefaultRawLoopMessage + "KFV-RAW tick 0001\nKFV-RAW tick 0002\nKFV-RAW tick 0003\n", 3},
			} {
				t.Run(tc.name, func(t *testing.T) {
					path, err := BuildRaw(dir, tc.opts)
					if err != nil {
						t.Fatal(err)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					r, err := RunQEMU(ctx, RawArgs(path, accel))
					if err != nil {
						t.Fatalf("%v\nstderr: %s", err, r.Stderr)
					}
					if want := RawExitStatus(tc.opts.ExitCode); r.ExitStatus != want {
						t.Errorf("exit status %d, want %d; stderr: %s", r.ExitStatus, want, r.Stderr)
					}
					if string(r.Serial) != tc.wantOut {
						t.Errorf("serial output %q, want %q", r.Serial, tc.wantOut)
					}
					t.Logf("%s %s: boot to exit %v", accel, tc.name, r.Elapsed.Round(time.Millisecond))
				})
			}
		})
	}
}

func buildLinuxForTest(t *testing.T) *Linux {
	t.Helper()
	l, err := BuildLinux(guestCache(t))
	if errors.Is(err, ErrNeedRoot) {
		t.Skipf("building the Linux guest: %v (run as root, or run apt-get update first)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func bootLinux(t *testing.T, l *Linux, workload string, extraArgs []string, cmdline ...string) Markers {
	t.Helper()
	accel, err := LinuxAccel()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append(LinuxArgs(l, accel, workload, cmdline...), extraArgs...)
	r, err := RunQEMU(ctx, args)
	if err != nil {
		t.Fatalf("%v\nserial: %s\nstderr: %s", err, r.Serial, r.Stderr)
	}
	m, err := ParseMarkers(r.Serial)
	if err != nil {
		t.Fatal(err)
	}
	if r.ExitStatus != 0 || !m.Booted || !m.Done || m.Workload != workload || m.Status != "ok" || len(m.Warnings) > 0 {
		t.Fatalf("exit %d, markers %+v\nserial: %s\nstderr: %s", r.ExitStatus, m, r.Serial, r.Stderr)
	}
	t.Logf("%s %s: kernel to /init %d ms, QEMU start to exit %v; %v", accel, workload, m.BootedMS, r.Elapsed.Round(time.Millisecond), m.Result)
	return m
}

func TestLinuxBoot(t *testing.T) {
	needQEMU(t)
	l := buildLinuxForTest(t)
	t.Run("boot", func(t *testing.T) {
		bootLinux(t, l, WorkloadBoot, nil)
	})
	for _, format := range []string{"raw", "qcow2"} {
		t.Run("disk-"+format, func(t *testing.T) {
			const mib = 16
			img := filepath.Join(t.TempDir(), "disk."+format)
			if format == "raw" {
				if err := os.WriteFile(img, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(img, mib<<20); err != nil {
					t.Fatal(err)
				}
			} else {
				if _, err := exec.LookPath("qemu-img"); err != nil {
					t.Skip("qemu-img not in PATH: install qemu-utils")
				}
				if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, fmt.Sprintf("%dM", mib)).CombinedOutput(); err != nil {
					t.Fatalf("qemu-img create: %v: %s", err, out)
				}
			}
			m := bootLinux(t, l, WorkloadDisk, DiskArgs(img, format), fmt.Sprintf("kfv.size=%d", mib))
			if m.Result["bytes"] != strconv.Itoa(mib<<20) {
				t.Errorf("bytes=%s, want %d", m.Result["bytes"], mib<<20)
			}
			if want := patternSHA256(mib); m.Result["sha256"] != want {
				t.Errorf("guest read back sha256 %s, want %s", m.Result["sha256"], want)
			}
		})
	}
	t.Run("net", func(t *testing.T) {
		const mib = 4
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		got := make(chan string, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- "accept: " + err.Error()
				return
			}
			defer c.Close()
			h := sha256.New()
			n, err := io.Copy(h, bufio.NewReader(c))
			if err != nil {
				got <- "read: " + err.Error()
				return
			}
			got <- fmt.Sprintf("%d %s", n, hex.EncodeToString(h.Sum(nil)))
		}()
		port := ln.Addr().(*net.TCPAddr).Port
		m := bootLinux(t, l, WorkloadNet, NetArgs(), fmt.Sprintf("kfv.size=%d", mib), fmt.Sprintf("kfv.port=%d", port))
		want := fmt.Sprintf("%d %s", mib<<20, patternSHA256(mib))
		select {
		case g := <-got:
			if g != want {
				t.Errorf("host received %q, want %q", g, want)
			}
		case <-time.After(10 * time.Second):
			t.Error("host listener got nothing")
		}
		if m.Result["sha256"] != patternSHA256(mib) {
			t.Errorf("guest sent sha256 %s, want %s", m.Result["sha256"], patternSHA256(mib))
		}
	})
}

// patternSHA256 is the sha256 of init.sh's "pattern N" output.
func patternSHA256(mib int) string {
	block := []byte(strings.Repeat("kfv-pattern-0123456789abcdef\n", 1048560/29+1)[:1048560])
	h := sha256.New()
	for i := 0; i < mib; i++ {
		fmt.Fprintf(h, "%016d", i)
		h.Write(block)
	}
	return hex.EncodeToString(h.Sum(nil))
}
