//go:build linux

package supervisor

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWaitStopped: a process asleep in a system call is not stopped (it
// could come back to user mode at any moment); the same process in a
// frozen cgroup is, and is seen so within the bound.
func TestWaitStopped(t *testing.T) {
	cg := realCgroup(t, nil)
	cmd := exec.Command("/bin/sleep", "100")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.fd.Fd())}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start into %s: %v", cg.name, err)
	}
	defer func() {
		cmd.Process.Kill()
		os.WriteFile(filepath.Join(cg.dir, "cgroup.freeze"), []byte("0"), 0)
		cmd.Wait()
		cg.remove()
	}()
	pid := cmd.Process.Pid
	time.Sleep(100 * time.Millisecond) // asleep in nanosleep
	if n, err := waitStopped(pid, -1, 50*time.Millisecond, [2]uint64{}); err == nil {
		t.Fatalf("a sleeping process seen stopped (%d threads): the hold would read the struct while it can still write", n.stopped)
	}
	start := time.Now()
	if err := writeCgroupFile(filepath.Join(cg.dir, "cgroup.freeze"), "1"); err != nil {
		t.Fatal(err)
	}
	n, err := waitStopped(pid, -1, time.Second, [2]uint64{})
	if err != nil || n.stopped != 1 {
		t.Fatalf("after the freeze: %d threads stopped, %v; want 1", n.stopped, err)
	}
	t.Logf("seen stopped %v after the freeze", time.Since(start))
	// Skipping the only thread leaves nothing to wait for.
	if n, err := waitStopped(pid, pid, 0, [2]uint64{}); err != nil || n.stopped != 0 {
		t.Errorf("waitStopped skipping the only thread: %d, %v", n.stopped, err)
	}
}

// TestStillCall: which uninterruptible calls count as stopped, from the
// lines /proc/PID/task/TID/syscall gives.
func TestStillCall(t *testing.T) {
	mem := [2]uint64{0x7000, 0x7020} // a memory-slot struct
	for _, tc := range []struct {
		sys  string
		want bool
	}{
		{"running", false},
		{"", false},
		{"-1 0x7ffd0000 0x401000", true}, // a fault on a page
		{"74 0x5 0x0 0x0 0x0 0x0 0x0 0x7ffd0000 0x401000", true},        // fsync
		{"75 0x5 0x0 0x0 0x0 0x0 0x0 0x7ffd0000 0x401000", true},        // fdatasync
		{"18 0x5 0x7000 0x1000 0x0 0x0 0x0 0x7ffd0000 0x401000", true},  // pwrite64 from the struct: reads it only
		{"296 0x5 0x7000 0x2 0x0 0x0 0x0 0x7ffd0000 0x401000", true},    // pwritev
		{"17 0x5 0x8000 0x1000 0x0 0x0 0x0 0x7ffd0000 0x401000", true},  // pread64 after the struct
		{"17 0x5 0x6000 0x1000 0x0 0x0 0x0 0x7ffd0000 0x401000", true},  // pread64 ending where it starts
		{"17 0x5 0x6000 0x1001 0x0 0x0 0x0 0x7ffd0000 0x401000", false}, // one byte into it
		{"0 0x5 0x7010 0x8 0x0 0x0 0x0 0x7ffd0000 0x401000", false},     // read into it
		{"0 0x5 0xfffffffffffff000 0x2000 0x0 0x0 0x0 0x0 0x0", false},  // wraps
		{"295 0x5 0x9000 0x2 0x0 0x0 0x0 0x7ffd0000 0x401000", false},   // preadv: the vector proves nothing now
		{"11 0x7000 0x1000 0x0 0x0 0x0 0x0 0x7ffd0000 0x401000", false}, // munmap
		{"33 0x5 0x6 0x0 0x0 0x0 0x0 0x7ffd0000 0x401000", false},       // dup2
		{"16 0x5 0xae46 0x7000 0x0 0x0 0x0 0x7ffd0000 0x401000", false}, // ioctl
		{"17 0x5", false}, // truncated
		{"x 0x5", false},
	} {
		if got := stillCall(tc.sys, mem); got != tc.want {
			t.Errorf("stillCall(%q) = %v, want %v", tc.sys, got, tc.want)
		}
	}
	// With nothing of the caller's memory read (mmap, mprotect), every
	// single-buffer read is still.
	if !stillCall("0 0x5 0x7010 0x8 0x0 0x0 0x0 0x7ffd0000 0x401000", [2]uint64{}) {
		t.Errorf("a read with no memory decided on does not count as still")
	}
}

// TestWaitStoppedStalledWrite: a thread stalled in the kernel in a write
// (a file system frozen under it: the write sleeps uninterruptibly and
// the cgroup freezer cannot catch it until it returns) counts as stopped
// for a hold, since a write changes nothing kfv decides; the caller of a
// held call, which must be seen in the freezer's trap (strict), does not.
func TestWaitStoppedStalledWrite(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a loop-mounted file system to freeze")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", img).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("no loop mount here: %v: %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	// The file exists before the freeze: creating it would stall in
	// openat, where this test wants the write.
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("fsfreeze", "-f", mnt).CombinedOutput(); err != nil {
		t.Skipf("fsfreeze: %v: %s", err, out)
	}
	frozen := true
	unfreeze := func() {
		if frozen {
			exec.Command("fsfreeze", "-u", mnt).Run()
			frozen = false
		}
	}
	defer unfreeze()

	cg := realCgroup(t, nil)
	cmd := exec.Command("/bin/dd", "if=/dev/zero", "of="+filepath.Join(mnt, "f"), "bs=4096", "count=1", "conv=notrunc")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.fd.Fd())}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start into %s: %v", cg.name, err)
	}
	defer func() {
		os.WriteFile(filepath.Join(cg.dir, "cgroup.freeze"), []byte("0"), 0)
		unfreeze()
		cmd.Process.Kill()
		cmd.Wait()
		cg.remove()
	}()
	pid := cmd.Process.Pid
	task := filepath.Join("/proc", strconv.Itoa(pid), "task", strconv.Itoa(pid))
	var sys string
	if !waitUntil(5*time.Second, func() bool {
		st, _ := os.ReadFile(task + "/stat")
		b, _ := os.ReadFile(task + "/syscall")
		sys = string(b)
		i := strings.LastIndexByte(string(st), ')')
		return i > 0 && i+2 < len(st) && st[i+2] == 'D' && strings.HasPrefix(sys, strconv.Itoa(unix.SYS_WRITE)+" ")
	}) {
		t.Fatalf("dd never stalled in write on the frozen file system (syscall %q)", sys)
	}
	if err := writeCgroupFile(filepath.Join(cg.dir, "cgroup.freeze"), "1"); err != nil {
		t.Fatal(err)
	}
	n, err := waitStopped(pid, -1, time.Second, [2]uint64{})
	if err != nil || n.stopped != 1 || n.inCall != 1 {
		t.Errorf("a thread stalled in write: %+v, %v; want it counted stopped, in its call", n, err)
	}
	if n, err := waitStopped(pid, -1, 100*time.Millisecond, [2]uint64{}, pid); err == nil {
		t.Errorf("the caller stalled in its call seen stopped (%+v): its call has not returned", n)
	}
	// Once the file system thaws, the write returns and the freezer
	// catches dd on its way back: stopped in the first sense.
	unfreeze()
	if n, err := waitStopped(pid, -1, 5*time.Second, [2]uint64{}, pid); err != nil || n.inCall != 0 {
		t.Errorf("after the file system thawed: %+v, %v; want dd in the freezer's trap", n, err)
	}
}
