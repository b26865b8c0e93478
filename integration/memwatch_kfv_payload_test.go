package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"kfv/guest"
	"kfv/memwatch"
	"kfv/memwatch/memwatchtest"
	"kfv/profiles"
)

// mkCountRE matches the react workload's counter lines.
var mkCountRE = regexp.MustCompile(`KFV-COUNT n=(\d+)`)

// mkCount is the last counter value the guest printed, -1 before any.
func mkCount(console string) int {
	m := mkCountRE.FindAllStringSubmatch(console, -1)
	if len(m) == 0 {
		return -1
	}
	n, err := strconv.Atoi(m[len(m)-1][1])
	if err != nil {
		return -1
	}
	return n
}

// TestMemwatchKfvPayloads: the implant's text-patch, procmem-write and
// rwx payloads run inside QEMU under kfv-run with a profile that lets
// them take effect (see bypassProfile: with the built-in profile they are
// stopped at the syscall and nothing is tampered). memwatch finds what
// they leave, the VO scrubs it, and then QEMU's text equals the ELF file
// again, the payload's page is no longer executable and writable code is
// r-x again, while the Linux guest goes on counting and finishes its
// workload.
func TestMemwatchKfvPayloads(t *testing.T) {
	needKfv(t)
	needQEMU(t)
	if testing.Short() {
		t.Skip("boots the Linux guest once per payload: skipped with -short")
	}
	implant := buildImplant(t)
	profile := bypassProfile(t)
	for _, c := range []struct {
		payload string
		kind    memwatch.Kind // the memwatch finding expected
	}{
		{"text-patch", memwatch.KindWritable},
		{"procmem-write", memwatch.KindModified},
		{"rwx", memwatch.KindExecMapping},
	} {
		t.Run(c.payload, func(t *testing.T) { runMemwatchPayload(t, implant, profile, c.payload, c.kind) })
	}
}

func runMemwatchPayload(t *testing.T, implant, profile, payload string, kind memwatch.Kind) {
	accel, err := guest.LinuxAccel()
	if err != nil {
		t.Fatal(err)
	}
	if accel == "kvm" {
		if p := kvmProblem(); p != "" {
			t.Skipf("%s=kvm but %s: unset it to run the Linux guest under TCG", guest.LinuxAccelEnv, p)
		}
	}
	l := attackLinuxGuest(t)
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatalf("create disk: %v", err)
	}
	if err := os.Truncate(disk, 4<<20); err != nil {
		t.Fatalf("size disk: %v", err)
	}
	// The guest counts every 0.2 s, at tick 5 copies the command staged
	// here in sector 16 to sector 8 (QEMU's worker writes it: the
	// implant's trigger) and counts on to the last tick: the count going
	// on after the scrub, and the workload's clean end, show the guest
	// healthy.
	cmd, err := guest.TriggerCommand(payload, "")
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open disk: %v", err)
	}
	_, err = img.WriteAt(cmd, 16*512)
	if err = errors.Join(err, img.Close()); err != nil {
		t.Fatalf("stage the command: %v", err)
	}
	const count = 40
	words := []string{"kfv.at=5", fmt.Sprintf("kfv.count=%d", count)}
	qargs := append(guest.LinuxArgs(l, accel, guest.WorkloadReact, words...), guest.DiskArgs(disk, "raw")...)
	qargs = append(qargs, guest.NetArgs()...)
	qargs = append(qargs, "-name", "kfv-memwatch,debug-threads=on")
	r := mkStart(t, []string{"--profile", profile}, qargs, "LD_PRELOAD="+implant)
	r.baseline()

	var rep implantReport
	if !waitFor(4*time.Minute, func() bool {
		rep = parseImplant(r.p.stderr.String(), payload)
		return rep.Result != "" || r.p.exited()
	}) || rep.Result == "" {
		t.Fatalf("the implant reported no result for %s\nconsole:\n%s\nstderr:\n%s\nevents:\n%s", payload, lastLines(r.p.stdout.String(), 30), lastLines(r.p.stderr.String(), 30), mkDump(r.eventsNow()))
	}
	if !rep.loadedIn(r.qemuPID) {
		t.Fatalf("the implant did not load into QEMU (pid %d): this run proves nothing; implant lines %q", r.qemuPID, rep.Lines)
	}
	t.Logf("payload %s ran in thread %d %q: result=%s detail=%s", payload, rep.TID, rep.Thread, rep.Result, rep.Detail)
	// The payload took effect: the profile's bypass works, so what
	// follows is memwatch's doing.
	if rep.Result != "ok" {
		t.Fatalf("the payload did not take effect under the bypass profile: %s\nevents:\n%s", rep.Detail, mkDump(r.eventsNow()))
	}
	switch payload {
	case "text-patch":
		if !strings.Contains(rep.Detail, "mprotect r-x: Permission denied") {
			t.Errorf("the payload put its page back to r-x (%s): memwatch has nothing left to find", rep.Detail)
		}
	case "procmem-write":
		if !strings.Contains(r.p.stderr.String(), "procmem-write could not restore") {
			t.Errorf("the payload restored the byte it wrote: memwatch has nothing left to find\nstderr:\n%s", lastLines(r.p.stderr.String(), 20))
		}
	}

	f := r.memFinding(string(kind), 10*time.Second)
	if f.Severity != "high" && f.Severity != "critical" {
		t.Errorf("memwatch finding of severity %s, want high or critical", f.Severity)
	}
	r.reaction("scrub", f, 10*time.Second)
	t.Logf("%s", r.scrubReport(f.Time))
	atScrub := mkCount(r.p.stdout.String())

	entry, err := memwatchtest.EntryPoint(r.qemuPID)
	if err != nil {
		t.Fatal(err)
	}
	switch payload {
	case "text-patch", "procmem-write":
		// Both patch the first byte of QEMU's _start.
		if !strings.Contains(f.Detail, fmt.Sprintf("%#x-", entry&^(memwatch.PageSize-1))) {
			t.Errorf("finding %q does not name the page of _start at %#x", f.Detail, entry)
		}
		mwAssertPristine(t, r.qemuPID, entry)
		if p := mwMapping(t, r.qemuPID, entry).Perms; p != "r-xp" {
			t.Errorf("after the scrub QEMU's text at %#x is %s, want r-xp", entry, p)
		}
	case "rwx":
		m := regexp.MustCompile(`stub at (0x[0-9a-f]+)`).FindStringSubmatch(rep.Detail)
		if m == nil {
			t.Fatalf("no stub address in the implant's report %q", rep.Detail)
		}
		addr, err := strconv.ParseUint(m[1], 0, 64)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(f.Detail, fmt.Sprintf("%#x", addr)) {
			t.Errorf("finding %q does not name the payload's page at %#x", f.Detail, addr)
		}
		mp := mwMapping(t, r.qemuPID, addr)
		t.Logf("payload's page %#x after the scrub: %s %s", addr, mp.Perms, mp.Backing())
		if strings.Contains(mp.Perms, "x") {
			t.Errorf("after the scrub the payload's page %#x is %s, still executable", addr, mp.Perms)
		}
	}

	// The guest goes on: it counts to the end and powers off cleanly.
	if st := r.p.wait(t, 3*time.Minute); st != 0 {
		t.Errorf("kfv-run exited %d, want 0 (the guest powers off)\nstderr:\n%s", st, lastLines(r.p.stderr.String(), 30))
	}
	out := r.p.stdout.String()
	mk, err := guest.ParseMarkers([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if last := mkCount(out); mk.Status != "ok" || mk.Result["count"] != strconv.Itoa(count) || last != count-1 || atScrub >= last {
		t.Errorf("guest: result %v, counted to %d (at the scrub: %d), want status=ok up to %d\nconsole:\n%s", mk.Result, last, atScrub, count-1, lastLines(out, 20))
	}
	evs := r.eventsNow()
	if errs := errorsIn(evs); len(errs) > 0 {
		t.Errorf("error events: %q", errs)
	}
	t.Logf("%s took %v", t.Name(), time.Since(r.began).Round(100*time.Millisecond))
}

// bypassProfile writes, checks and returns a profile that lets the
// implant's text-patch, procmem-write and rwx payloads take effect, as
// if the attacker had got around the seccomp filter, so that memwatch
// is what must catch them. It is the built-in profile with these
// changes, each needed because the payloads undo their own change
// within microseconds, far inside one scan period:
//
//   - text-patch: mprotect making memory writable and executable is
//     allowed from the block worker (the payload's thread), so QEMU's
//     text gets patched; the payload's mprotect back to r-x still meets
//     no-exec-memory and is denied, so the page stays writable: memwatch
//     finds code made writable.
//   - procmem-write: opening /proc/self/mem is allowed from the worker
//     (no-proc-escape denies it). pwrite64, allowed in the kernel by the
//     built-in profile, is inspected and allowed; a pwrite64 on a
//     /proc/PID/mem fd is attributed to the resource "procmem" whose
//     rate detector (one call per minute) makes the HO deny the second:
//     the payload's write goes through, its restore does not, and
//     memwatch finds the text modified.
//   - rwx: an anonymous executable mmap is allowed from the worker
//     (no-exec-memory denies it). munmap, allowed in the kernel by the
//     built-in profile, is inspected; the worker's munmap of one page
//     (the payload's) is denied, so the executable page stays: memwatch
//     finds foreign executable memory.
func bypassProfile(t *testing.T) string {
	t.Helper()
	src, err := profiles.BuiltinSource("qemu")
	if err != nil {
		t.Fatalf("built-in profile: %v", err)
	}
	text := string(src)
	edit := func(old, new string) {
		t.Helper()
		if strings.Count(text, old) != 1 {
			t.Fatalf("the built-in profile holds %q %d times, want once: update bypassProfile", old, strings.Count(text, old))
		}
		text = strings.Replace(text, old, new, 1)
	}
	edit(`"pread64", "pwrite64",`, `"pread64",`)
	edit(`names = ["brk", "munmap", "mremap",`, `names = ["brk", "mremap",`)
	edit(`detectors = ["origin", "behaviour"]`, `detectors = ["origin", "behaviour", "rate"]`)
	edit("[[rule]]\nname = \"no-exec-memory\"", `[[rule]]
name = "test-bypass-text-patch"
syscalls = ["mprotect"]
threads = ["worker"]
args = [{ index = 2, op = "masked_eq", mask = "PROT_WRITE", value = "PROT_WRITE" }]
verdict = "allow"
reason = "test: the text-patch payload makes QEMU's text writable"

[[rule]]
name = "test-bypass-rwx"
syscalls = ["mmap"]
threads = ["worker"]
backing = ["anon"]
verdict = "allow"
reason = "test: the rwx payload maps anonymous executable memory"

[[rule]]
name = "test-bypass-procmem"
syscalls = ["openat", "open", "openat2"]
paths = ["/proc/self/mem"]
threads = ["worker"]
verdict = "allow"
reason = "test: the procmem-write payload opens /proc/self/mem"

[[rule]]
name = "test-keep-rwx-page"
syscalls = ["munmap"]
threads = ["worker"]
args = [{ index = 1, op = "eq", value = 4096 }]
verdict = "deny"
severity = "low"
reason = "test: the rwx payload's page stays mapped"

[[rule]]
name = "test-munmap"
syscalls = ["munmap"]
verdict = "allow"
reason = "test: munmap is inspected only to keep the rwx payload's page"

[[rule]]
name = "test-pwrite"
syscalls = ["pwrite64"]
verdict = "allow"
reason = "test: pwrite64 is inspected only to count writes to /proc/PID/mem"

[[rule]]
name = "no-exec-memory"`)
	edit("[[hrsc]]\nname = \"vcpu*\"", `[[hrsc]]
name = "procmem"
fds = ["/proc/*/mem"]
syscalls = ["pwrite64"]
reason = "test: writes through /proc/PID/mem"

[[hrsc]]
name = "vcpu*"`)
	text += `
# Tables of the test (see bypassProfile).

[[syscall]]
names = ["pwrite64", "munmap"]
action = "inspect"
reason = "test: see the rules test-pwrite and test-keep-rwx-page"

[[detector]]
name = "procmem-rewrite"
kind = "rate"
hrsc = ["procmem"]
syscalls = ["pwrite64"]
threshold = 1
window = "1m"
severity = "high"
reason = "test: the second write through /proc/PID/mem (the procmem-write payload's restore) is denied"
`
	path := filepath.Join(t.TempDir(), "bypass.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatalf("write profile: %v", err)
	}
	if out, err := exec.Command(kfvRun, "profile", "check", path).CombinedOutput(); err != nil {
		t.Fatalf("kfv-run profile check %s: %v\n%s", path, err, out)
	}
	return path
}
