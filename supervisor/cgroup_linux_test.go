//go:build linux

package supervisor

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCgroupName(t *testing.T) {
	for _, c := range []struct {
		vm, want string
	}{{"web", "kfv-web-42"}, {"", "kfv-qemu-42"}, {"a/../b c", "kfv-a_.._b_c-42"}, {".x", "kfv-_x-42"}} {
		if got := cgroupName(c.vm, 42); got != c.want {
			t.Errorf("cgroupName(%q) = %q, want %q", c.vm, got, c.want)
		}
		if pid, ok := stalePID(c.want); !ok || pid != 42 {
			t.Errorf("stalePID(%q) = %d, %t, want 42", c.want, pid, ok)
		}
	}
	for _, n := range []string{"kfv-", "kfv-web", "kfv-web-x", "machine.slice", "kfv-web-0", "kfv-12"} {
		if pid, ok := stalePID(n); ok {
			t.Errorf("stalePID(%q) = %d, want not a cgroup of kfv's", n, pid)
		}
	}
}

// TestCgroupRemoveStale: of the cgroups under a parent, only the empty
// kfv-*-PID ones of a PID that is gone are removed.
func TestCgroupRemoveStale(t *testing.T) {
	parent := t.TempDir()
	dead, self := 999991, os.Getpid()
	mk := func(name string, file bool) {
		if err := os.Mkdir(filepath.Join(parent, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if file { // not empty: rmdir fails, as for a cgroup with a child
			if err := os.WriteFile(filepath.Join(parent, name, "x"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk(cgroupName("gone", dead), false)
	mk(cgroupName("busy", dead), true)
	mk(cgroupName("live", self), false)
	mk("kfv-run-"+strconv.Itoa(dead), false)
	mk("machine.slice", false)
	isAlive := func(pid int) bool { return pid == self }
	got := removeStale(parent, isAlive)
	slices.Sort(got)
	want := []string{cgroupName("gone", dead), "kfv-run-" + strconv.Itoa(dead)}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("removed %v, want %v", got, want)
	}
	for _, n := range []string{cgroupName("busy", dead), cgroupName("live", self), "machine.slice"} {
		if _, err := os.Stat(filepath.Join(parent, n)); err != nil {
			t.Errorf("%s: %v, want it kept", n, err)
		}
	}
}

// TestCgroupLimitsFake: the limits are written to the files of QEMU's
// cgroup, in a directory that fakes cgroupfs: pids.max and memory.max
// where they exist, and each missing one is named with why.
func TestCgroupLimitsFake(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"pids.max", "memory.max"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("max\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	limits, missing := writeLimits(dir, &Cgroup{PidsMax: 100, MemoryMax: 3 << 30}, nil)
	if want := []string{"pids.max 100", "memory.max 3221225472"}; !slices.Equal(limits, want) || len(missing) > 0 {
		t.Errorf("limits %v missing %v, want %v and none missing", limits, missing, want)
	}
	for f, want := range map[string]string{"pids.max": "100", "memory.max": "3221225472"} {
		if b, _ := os.ReadFile(filepath.Join(dir, f)); string(b) != want {
			t.Errorf("%s holds %q, want %q", f, b, want)
		}
	}
	// The defaults: pids.max 4096, memory.max max.
	limits, _ = writeLimits(dir, nil, nil)
	if want := []string{"pids.max 4096", "memory.max max"}; !slices.Equal(limits, want) {
		t.Errorf("default limits %v, want %v", limits, want)
	}
	if l, _ := writeLimits(dir, &Cgroup{PidsMax: -1}, nil); l[0] != "pids.max max" {
		t.Errorf("PidsMax -1: %v, want pids.max max", l)
	}
	// Without the memory controller: pids alone, memory named missing
	// with the reason enableControllers gave.
	os.Remove(filepath.Join(dir, "memory.max"))
	limits, missing = writeLimits(dir, nil, map[string]string{"memory": "the memory controller is not delegated to kfv-run's cgroup"})
	if !slices.Equal(limits, []string{"pids.max 4096"}) || len(missing) != 1 || !strings.Contains(missing[0], "memory.max (the memory controller is not delegated") {
		t.Errorf("without memory.max: limits %v missing %v", limits, missing)
	}
}

// TestCgroupControllersFake: a parent whose cgroup.controllers lacks
// memory and pids gives QEMU's cgroup neither, and says so.
func TestCgroupControllersFake(t *testing.T) {
	parent := t.TempDir()
	os.WriteFile(filepath.Join(parent, "cgroup.controllers"), []byte("cpu io hugetlb\n"), 0o644)
	os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("\n"), 0o644)
	moved, missing := enableControllers(parent, os.Getpid(), limitControllers)
	if moved != "" || len(missing) != 2 || !strings.Contains(missing["pids"], "not delegated") || !strings.Contains(missing["memory"], "not delegated") {
		t.Errorf("moved %q missing %v, want nothing moved and both not delegated", moved, missing)
	}
	// Already enabled: nothing to do, nothing missing.
	os.WriteFile(filepath.Join(parent, "cgroup.controllers"), []byte("memory pids\n"), 0o644)
	os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("memory pids\n"), 0o644)
	if moved, missing := enableControllers(parent, os.Getpid(), limitControllers); moved != "" || len(missing) != 0 {
		t.Errorf("enabled already: moved %q missing %v, want nothing", moved, missing)
	}
}

// realCgroup makes a cgroup of the test's own under its cgroup v2, as
// kfv-run makes QEMU's, or skips saying why it cannot.
func realCgroup(t *testing.T, set *Cgroup) *vmCgroup {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a cgroup v2 child of the test's cgroup")
	}
	root := cgroupRoot()
	if root == "" {
		t.Skip("no cgroup v2 hierarchy is mounted")
	}
	own, err := ownV2Cgroup()
	if err != nil {
		t.Skipf("no cgroup v2 path: %v", err)
	}
	if err := unix.Access(filepath.Join(root, own), unix.W_OK); err != nil {
		t.Skipf("the test's cgroup v2 %s is not writable: %v", own, err)
	}
	cg, detail, err := makeVMCgroup(root, own, "cgtest", os.Getpid(), set)
	if err != nil {
		t.Fatalf("makeVMCgroup: %v", err)
	}
	if cg == nil {
		t.Skipf("no cgroup: %s", detail)
	}
	t.Logf("%s", detail)
	if !strings.HasPrefix(detail, "QEMU's cgroup "+cg.name) || !strings.Contains(detail, "pids.max") || !strings.Contains(detail, "memory.max") {
		t.Errorf("detail %q: want the cgroup's name and what became of both limits", detail)
	}
	t.Cleanup(func() { cg.remove() })
	return cg
}

// TestCgroupFreezeSIGCONT: a real child started into QEMU's cgroup by
// clone3 (CLONE_INTO_CGROUP), as the loader is, writes without end. The
// freeze stops it (cgroup.events says frozen 1, nothing more arrives); a
// SIGCONT sent from outside does not resume it; the thaw does. Once the
// child is reaped, the cgroup is removed.
func TestCgroupFreezeSIGCONT(t *testing.T) {
	cg := realCgroup(t, nil)
	cmd := exec.Command("/bin/sh", "-c", "while :; do echo x; done")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.fd.Fd())}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start into %s: %v", cg.name, err)
	}
	pid := cmd.Process.Pid
	reaped := false
	defer func() {
		if !reaped {
			cmd.Process.Kill()
			os.WriteFile(filepath.Join(cg.dir, "cgroup.freeze"), []byte("0"), 0)
			cmd.Wait()
		}
	}()
	var n atomic.Int64
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := out.Read(buf)
			n.Add(int64(k))
			if err != nil {
				return
			}
		}
	}()
	progress := func() int64 {
		a := n.Load()
		time.Sleep(300 * time.Millisecond)
		return n.Load() - a
	}
	if p := progress(); p == 0 {
		t.Fatal("the child writes nothing before the freeze")
	}
	dir, name := qemuCgroup(pid)
	if dir != cg.dir || name != cg.name {
		t.Fatalf("the child's own cgroup is %q (%q), want %s: started outside it?", dir, name, cg.dir)
	}
	how, err := freezeCgroup(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", how)
	frozen := func() bool {
		b, err := os.ReadFile(filepath.Join(cg.dir, "cgroup.events"))
		if err != nil {
			t.Fatal(err)
		}
		return parseFrozen(string(b))
	}
	if !frozen() {
		t.Fatal("cgroup.events does not say frozen 1 after the freeze")
	}
	progress() // what was in the pipe
	if err := unix.Kill(pid, unix.SIGCONT); err != nil {
		t.Fatalf("SIGCONT: %v", err)
	}
	if p := progress(); p != 0 {
		t.Errorf("the child wrote %d bytes after a SIGCONT from outside: the freeze did not hold", p)
	}
	if !frozen() {
		t.Error("cgroup.events does not say frozen 1 after a SIGCONT from outside")
	}
	if err := os.WriteFile(filepath.Join(cg.dir, "cgroup.freeze"), []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	if p := progress(); p == 0 {
		t.Error("the child writes nothing after the thaw")
	}
	cmd.Process.Kill()
	cmd.Wait()
	reaped = true
	if err := cg.remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cg.dir); !os.IsNotExist(err) {
		t.Errorf("%s after remove: %v, want it gone", cg.dir, err)
	}
}

// TestCgroupRequired: with cgroup = "required", a host whose controllers
// do not reach QEMU's cgroup refuses the start, and leaves no cgroup
// behind.
func TestCgroupRequired(t *testing.T) {
	cg := realCgroup(t, nil)
	if _, err := os.Stat(filepath.Join(cg.dir, "pids.max")); err == nil {
		if _, err := os.Stat(filepath.Join(cg.dir, "memory.max")); err == nil {
			t.Skip("this host gives QEMU's cgroup both limits: nothing to refuse")
		}
	}
	cg.remove()
	own, _ := ownV2Cgroup()
	got, detail, err := makeVMCgroup(cgroupRoot(), own, "cgtest", os.Getpid(), &Cgroup{Mode: CgroupRequired})
	if err == nil || got != nil || !strings.Contains(err.Error(), `cgroup = "required"`) {
		t.Fatalf("required on a host without both limits: %v, %v (%s), want an error", got, err, detail)
	}
	t.Logf("%v", err)
	if _, err := os.Stat(cg.dir); !os.IsNotExist(err) {
		t.Errorf("%s after the refusal: %v, want it gone", cg.dir, err)
	}
}

// TestCgroupNoInternalProcess: in a real cgroup v2 with the test's
// process in it (as kfv-run is in its own), a controller cannot be
// enabled for the children while the process is there; enableControllers
// moves the process into a leaf kfv-run-PID and enables it then. The
// controller is any the hierarchy's root gives its children (hugetlb on
// a hybrid host).
func TestCgroupNoInternalProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes cgroups and moves the test into them")
	}
	root := cgroupRoot()
	own, err := ownV2Cgroup()
	if root == "" || err != nil || own != "/" {
		t.Skipf("needs the test in the root of a writable cgroup v2 (root %q, own %q, %v)", root, own, err)
	}
	avail, _ := readFields(filepath.Join(root, "cgroup.subtree_control"))
	if len(avail) == 0 {
		avail, _ = readFields(filepath.Join(root, "cgroup.controllers"))
		if len(avail) == 0 {
			t.Skip("the cgroup v2 root has no controller to give its children")
		}
		if err := writeCgroupFile(filepath.Join(root, "cgroup.subtree_control"), "+"+avail[0]); err != nil {
			t.Skipf("enable %s at the root: %v", avail[0], err)
		}
		// Registered first, so run last: the host's root as it was.
		t.Cleanup(func() { writeCgroupFile(filepath.Join(root, "cgroup.subtree_control"), "-"+avail[0]) })
	}
	ctl := avail[0]
	parent := filepath.Join(root, "kfvtest-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	leaf := filepath.Join(parent, "kfv-run-"+strconv.Itoa(os.Getpid()))
	t.Cleanup(func() {
		// Back to the root (it takes processes whatever its children
		// have), then the test's cgroups go.
		if err := writeCgroupFile(filepath.Join(root, "cgroup.procs"), "0"); err != nil {
			t.Errorf("move the test back to the root: %v", err)
		}
		unix.Rmdir(leaf)
		if err := unix.Rmdir(parent); err != nil {
			t.Errorf("remove %s: %v", parent, err)
		}
	})
	if err := writeCgroupFile(filepath.Join(parent, "cgroup.procs"), "0"); err != nil {
		t.Fatalf("move the test into %s: %v", parent, err)
	}
	moved, missing := enableControllers(parent, os.Getpid(), []string{ctl})
	if len(missing) != 0 || !strings.Contains(moved, "kfv-run-"+strconv.Itoa(os.Getpid())) {
		t.Fatalf("enable %s: moved %q missing %v, want the test moved into a leaf and %s enabled", ctl, moved, missing, ctl)
	}
	t.Logf("%s; %s enabled", moved, ctl)
	if on, _ := readFields(filepath.Join(parent, "cgroup.subtree_control")); !slices.Contains(on, ctl) {
		t.Errorf("%s/cgroup.subtree_control %v, want %s", parent, on, ctl)
	}
	b, _ := os.ReadFile("/proc/self/cgroup")
	if p, _ := parseCgroupV2(string(b)); p != "/"+filepath.Base(parent)+"/"+filepath.Base(leaf) {
		t.Errorf("the test is in %q, want the leaf %s", p, leaf)
	}
	// Another process beside kfv-run: kfv moves nothing that is not its
	// own, and says why the controller is missing.
	other := filepath.Join(root, "kfvtest-other-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	defer unix.Rmdir(other)
	cmd := exec.Command("/bin/sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for _, pid := range []int{cmd.Process.Pid, os.Getpid()} {
		if err := writeCgroupFile(filepath.Join(other, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			t.Fatal(err)
		}
	}
	moved, missing = enableControllers(other, os.Getpid(), []string{ctl})
	if moved != "" || !strings.Contains(missing[ctl], "cannot enable") {
		t.Errorf("with another process: moved %q missing %v, want nothing moved and %s missing", moved, missing, ctl)
	}
	cmd.Process.Kill()
	cmd.Wait()
	writeCgroupFile(filepath.Join(root, "cgroup.procs"), "0")
}
