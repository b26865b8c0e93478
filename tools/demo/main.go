// Command demo is `make demo`: a supervised demo VM.
//
// It boots the project's Linux guest under kfv-run (enforce mode, built-in
// profile), lets it do real work on its virtio disk, then simulates a
// compromised QEMU: a test implant preloaded into QEMU plays a subverted
// block driver and, when the guest asks, tries to run a shell from QEMU's
// own I/O thread. The demo shows that the shell never ran, that the VM kept
// running, and what kfv saw and did.
//
//	go run ./tools/demo -kfv bin/kfv-run -guests .cache/guests
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"kfv/guest"
)

func main() {
	kfv := flag.String("kfv", "bin/kfv-run", "the kfv-run `binary`")
	guests := flag.String("guests", ".cache/guests", "guest cache `dir`")
	flag.Parse()
	if err := run(*kfv, *guests); err != nil {
		fmt.Fprintln(os.Stderr, "demo: "+err.Error())
		os.Exit(1)
	}
}

func say(format string, a ...any) { fmt.Printf(format+"\n", a...) }

func run(kfv, guests string) error {
	kfv, err := filepath.Abs(kfv)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "kfv-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	l, err := guest.BuildLinux(guests)
	if err != nil {
		return fmt.Errorf("build the Linux guest: %w", err)
	}
	accel, err := guest.LinuxAccel()
	if err != nil {
		return err
	}
	disk := filepath.Join(work, "disk.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(disk, 64<<20); err != nil {
		return err
	}
	qemu, err := guest.QEMUBinary()
	if err != nil {
		return fmt.Errorf("%w: run 'make deps'", err)
	}

	say("== kfv demo")
	say("   QEMU runs under kfv-run: a seccomp filter keeps its hot path in the kernel and sends")
	say("   the calls that matter to kfv's supervisor, which decides, answers and logs each one.")
	say("")
	say("== 1. A supervised VM at work: the Linux guest (%s) writes 16 MiB to its virtio disk,", accel)
	say("      reads it back and checks it")
	events1 := filepath.Join(work, "events-work.jsonl")
	args := append(guest.LinuxArgs(l, accel, "disk", "kfv.size=16"), guest.DiskArgs(disk, "raw")...)
	args = append(args, "-name", "demo,debug-threads=on")
	cmd := exec.Command(kfv, append([]string{"--events", events1, "--", qemu}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("kfv-run (workload): %w\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "KFV-") {
			say("   guest | %s", line)
		}
	}
	dec, den := countDecisions(events1)
	say("   kfv answered %d calls QEMU could not make alone, and denied %d of them.", dec, den)
	say("")

	implant, err := buildImplant(work)
	if err != nil {
		return err
	}
	marker := filepath.Join(work, "pwned")
	say("== 2. SIMULATED COMPROMISE. A test implant preloaded into QEMU plays a subverted virtio-blk")
	say("      driver. The guest writes a magic sector; the implant then tries, from QEMU's own block")
	say("      I/O thread, to run /bin/sh -c 'touch %s'.", marker)
	events2 := filepath.Join(work, "events-attack.jsonl")
	trig, err := guest.TriggerCmdline("exec-shell", marker, 30)
	if err != nil {
		return err
	}
	qmpSock := filepath.Join(work, "qmp.sock")
	args = append(guest.LinuxArgs(l, accel, "trigger", trig...), guest.DiskArgs(disk, "raw")...)
	args = append(args, "-name", "demo,debug-threads=on", "-qmp", "unix:"+qmpSock+",server=on,wait=off")
	cmd = exec.Command(kfv, append([]string{"--events", events2, "--", qemu}, args...)...)
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+implant)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Process.Kill()
	triggered := waitLine(stdout, "KFV-RESULT workload=trigger", 3*time.Minute)
	time.Sleep(500 * time.Millisecond)
	status := qmp(qmpSock, "query-status")
	qmp(qmpSock, "quit")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.HasPrefix(line, "kfv-implant:") {
			say("   implant | %s", strings.TrimPrefix(line, "kfv-implant: "))
		}
	}
	if !triggered {
		return fmt.Errorf("the guest never sent its trigger\n%s", stderr.String())
	}
	_, statErr := os.Stat(marker)
	ran := statErr == nil
	if ran {
		say("   !! the shell RAN: %s exists. kfv did not stop it.", marker)
	} else {
		say("   -> the shell never ran: %s does not exist.", marker)
	}
	say("   -> QMP query-status after the attempt: %s", status)
	say("")
	say("== 3. What kfv saw and did (kfv-run events %s):", filepath.Base(events2))
	ev := exec.Command(kfv, "events", events2)
	ev.Stdout, ev.Stderr = os.Stdout, os.Stderr
	if err := ev.Run(); err != nil {
		return fmt.Errorf("kfv-run events: %w", err)
	}
	if ran {
		return errors.New("the simulated attack was not stopped")
	}
	return nil
}

// buildImplant compiles the test implant; it is never installed.
func buildImplant(dir string) (string, error) {
	out := filepath.Join(dir, "implant.so")
	cmd := exec.Command("gcc", "-shared", "-fPIC", "-O2", "-o", out, "integration/implant/implant.c")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the test implant: %w\n%s", err, b)
	}
	return out, nil
}

func countDecisions(path string) (all, denied int) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e struct{ Kind, Verdict string }
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Kind == "decision" {
			all++
			if e.Verdict == "deny" {
				denied++
			}
		}
	}
	return all, denied
}

// waitLine reads r until a line contains s or the time is up.
func waitLine(r interface{ Read([]byte) (int, error) }, s string, timeout time.Duration) bool {
	found := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if strings.Contains(sc.Text(), s) {
				found <- true
				for sc.Scan() {
				}
				return
			}
		}
		found <- false
	}()
	select {
	case ok := <-found:
		return ok
	case <-time.After(timeout):
		return false
	}
}

// qmp runs one QMP command and returns its answer line.
func qmp(sock, command string) string {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return "(no QMP: " + err.Error() + ")"
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	rd := bufio.NewReader(c)
	rd.ReadString('\n') // greeting
	fmt.Fprintf(c, "{\"execute\":\"qmp_capabilities\"}\n")
	rd.ReadString('\n')
	fmt.Fprintf(c, "{\"execute\":%q}\n", command)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			return "(" + err.Error() + ")"
		}
		if !strings.Contains(line, `"event"`) {
			return strings.TrimSpace(line)
		}
	}
}
