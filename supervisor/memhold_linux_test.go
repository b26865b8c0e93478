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
	if n, err := waitStopped(pid, -1, 50*time.Millisecond); err == nil {
		t.Fatalf("a sleeping process seen stopped (%d threads): the hold would read the struct while it can still write", n)
	}
	start := time.Now()
	if err := writeCgroupFile(filepath.Join(cg.dir, "cgroup.freeze"), "1"); err != nil {
		t.Fatal(err)
	}
	n, err := waitStopped(pid, -1, time.Second)
	if err != nil || n != 1 {
		t.Fatalf("after the freeze: %d threads stopped, %v; want 1", n, err)
	}
	t.Logf("seen stopped %v after the freeze", time.Since(start))
	// Skipping the only thread leaves nothing to wait for.
	if n, err := waitStopped(pid, pid, 0); err != nil || n != 0 {
		t.Errorf("waitStopped skipping the only thread: %d, %v", n, err)
	}
}
