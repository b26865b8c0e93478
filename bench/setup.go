package main

import (
	"bufio"
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"kfv/guest"
)

//go:embed c/*.c profiles/*.toml
var sources embed.FS

// prepare builds the C programs, writes the bench profiles and finds the
// guests.
func (c *config) prepare() error {
	for _, tool := range []string{"gcc", "taskset"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not in PATH: run 'make deps' (installs gcc, util-linux and qemu-system-x86)", tool)
		}
	}
	qemu, err := guest.QEMUBinary()
	if err != nil {
		return fmt.Errorf("%w: run 'make deps'", err)
	}
	c.qemu = qemu
	c.floor = filepath.Join(c.work, "floor")
	c.target = filepath.Join(c.work, "target")
	// The target runs under kfv-run, behind QEMU's Landlock wall, which
	// lets it execute its binary and read nothing else: no shared
	// libraries (the bench profiles leave opens to the kernel, kfv opens
	// QEMU's for it). So it is linked statically.
	for bin, src := range map[string]string{c.floor: "c/floor.c", c.target: "c/target.c"} {
		if err := buildC(src, bin, bin == c.target); err != nil {
			return err
		}
	}
	c.allow = filepath.Join(c.work, "bench-allow.toml")
	c.deny = filepath.Join(c.work, "bench-deny.toml")
	c.openProf = filepath.Join(c.work, "bench-open.toml")
	c.connectProf = filepath.Join(c.work, "bench-connect.toml")
	c.containProf = filepath.Join(c.work, "bench-contain.toml")
	for dst, src := range map[string]string{c.allow: "profiles/allow.toml", c.deny: "profiles/deny.toml", c.openProf: "profiles/open.toml", c.connectProf: "profiles/connect.toml", c.containProf: "profiles/contain.toml"} {
		b, err := sources.ReadFile(src)
		if err != nil {
			return fmt.Errorf("read embedded %s: %w", src, err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return fmt.Errorf("write bench profile: %w", err)
		}
	}
	if c.accel, err = guest.LinuxAccel(); err != nil {
		return err
	}
	if c.linux, err = guest.BuildLinux(c.guests); err != nil {
		return fmt.Errorf("linux guest (make guests): %w", err)
	}
	if c.rawPath, err = guest.BuildRaw(c.guests, guest.RawOptions{ExitCode: rawExitCode}); err != nil {
		return fmt.Errorf("raw guest: %w", err)
	}
	return nil
}

// rawExitCode is what the raw hello guest writes to isa-debug-exit.
const rawExitCode = 42

func buildC(src, bin string, static bool) error {
	b, err := sources.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read embedded %s: %w", src, err)
	}
	path := bin + ".c"
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", src, err)
	}
	args := []string{"-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", bin, path}
	if static {
		args = append(args, "-static")
	}
	out, err := exec.Command("gcc", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("gcc %s: %w\n%s", src, err, out)
	}
	return nil
}

// machine describes where the numbers were taken.
type machine struct {
	CPU    string `json:"cpu"`
	Cores  int    `json:"cores"`
	Kernel string `json:"kernel"`
	QEMU   string `json:"qemu"`
	KVM    string `json:"kvm"`
	Go     string `json:"go"`
	KFV    string `json:"kfv"`
}

func describeMachine(qemu string) (machine, error) {
	m := machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return m, fmt.Errorf("read cpuinfo: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			m.CPU = strings.TrimSpace(v)
			break
		}
	}
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return m, fmt.Errorf("uname: %w", err)
	}
	m.Kernel = cstr(u.Release[:])
	v, err := guest.QEMUVersionOf(qemu)
	if err != nil {
		return m, err
	}
	m.QEMU = strings.TrimPrefix(v.Line, "QEMU emulator version ")
	m.KVM = kvmKind()
	return m, nil
}

// kfvVersion is the first line of "kfv-run version" minus the program
// name: the build measured, which need not be the checkout's.
func kfvVersion(kfvRun string) (string, error) {
	out, err := exec.Command(kfvRun, "version").Output()
	if err != nil {
		return "", fmt.Errorf("%s version: %w", kfvRun, err)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimPrefix(first, "kfv-run "), nil
}

func cstr(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

// kvmKind names the KVM module behind /dev/kvm and whether it opens.
func kvmKind() string {
	kind := "none"
	for _, mod := range []string{"kvm_pvm", "kvm_intel", "kvm_amd"} {
		if _, err := os.Stat("/sys/module/" + mod); err == nil {
			kind = mod
			break
		}
	}
	if p := kvmProblem(); p != "" {
		return kind + " (" + p + ")"
	}
	return kind
}

// kvmProblem says why the raw guest cannot run under KVM here, or "".
func kvmProblem() string {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "needs a usable /dev/kvm: " + err.Error()
	}
	if err := f.Close(); err != nil {
		return "close /dev/kvm: " + err.Error()
	}
	return ""
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown: " + err.Error()
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// proc is one finished run of a measured program.
type proc struct {
	status  int // exit status, 128+N for signal N
	elapsed time.Duration
	stdout  []byte
	stderr  []byte
}

// runOpts are the hooks of one run.
type runOpts struct {
	timeout time.Duration
	// line is called for every stdout line as it arrives, with the
	// time it was read and the program's pid.
	line func(s string, at time.Time, pid int)
	// sample is called with the pid every sampleEvery while the
	// program runs, from another goroutine.
	sample func(pid int)
}

const sampleEvery = 100 * time.Millisecond

// runProc runs argv to completion. A non-zero exit status is not an
// error; failing to start and running out of time are.
func runProc(argv []string, o runOpts) (proc, error) {
	var p proc
	if o.timeout == 0 {
		o.timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return p, fmt.Errorf("stdout pipe: %w", err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return p, fmt.Errorf("start %s: %w", argv[0], err)
	}
	pid := cmd.Process.Pid
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if o.sample != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(sampleEvery)
			defer tick.Stop()
			for {
				o.sample(pid)
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		at := time.Now()
		out.Write(sc.Bytes())
		out.WriteByte('\n')
		if o.line != nil {
			o.line(sc.Text(), at, pid)
		}
	}
	scanErr := sc.Err()
	close(stop)
	wg.Wait()
	werr := cmd.Wait()
	p.elapsed = time.Since(t0)
	p.stdout, p.stderr = out.Bytes(), stderr.Bytes()
	if ctx.Err() != nil {
		return p, fmt.Errorf("%s did not finish within %v", filepath.Base(argv[0]), o.timeout)
	}
	if scanErr != nil {
		return p, fmt.Errorf("read output of %s: %w", argv[0], scanErr)
	}
	var ee *exec.ExitError
	switch {
	case errors.As(werr, &ee):
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			p.status = 128 + int(ws.Signal())
		} else {
			p.status = ws.ExitStatus()
		}
	case werr != nil:
		return p, fmt.Errorf("wait for %s: %w", argv[0], werr)
	}
	return p, nil
}

// kfvCmd is the kfv-run command line for prog under profile in mode,
// with events to file.
func (c *config) kfvCmd(profile, mode, events string, prog ...string) []string {
	a := []string{c.kfvRun, "--mode", mode, "--events", events}
	if profile != "" {
		a = append(a, "--profile", profile)
	}
	return append(append(a, "--"), prog...)
}

// kfvbFields parses a target's "KFVB KIND k=v ..." line.
func kfvbFields(line, kind string) (map[string]float64, bool) {
	rest, ok := strings.CutPrefix(line, "KFVB "+kind+" ")
	if !ok {
		return nil, false
	}
	m := make(map[string]float64)
	for _, w := range strings.Fields(rest) {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			continue
		}
		m[k] = f
	}
	return m, true
}

func splitComma(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// tail returns the last n bytes of b as a string, for error messages.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
