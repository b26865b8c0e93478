//go:build linux

package supervisor

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
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
