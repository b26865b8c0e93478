//go:build linux

package supervisor

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"kfv/policy"
	"kfv/profiles"
)

// TestPlanLandlock: the wall handles every right the ABI knows, names
// what an older kernel cannot enforce, and "required" refuses such a
// kernel before anything starts.
func TestPlanLandlock(t *testing.T) {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode    LandlockMode
		abi     int
		wantErr bool
		missing int
		net     bool
		scoped  bool
	}{
		{LandlockBestEffort, 7, false, 0, true, true},
		{LandlockBestEffort, 6, false, 0, true, true},
		{LandlockBestEffort, 4, false, 2, true, false},
		{LandlockBestEffort, 2, false, 4, false, false},
		{LandlockBestEffort, 0, false, 1, false, false},
		{LandlockRequired, 6, false, 0, true, true},
		{LandlockRequired, 5, true, 1, true, false},
		{LandlockRequired, 0, true, 1, false, false},
	} {
		p, missing, err := planLandlock(tc.mode, tc.abi, bin)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s ABI %d: error %v, want error %t", tc.mode, tc.abi, err, tc.wantErr)
			continue
		}
		if len(missing) != tc.missing {
			t.Errorf("%s ABI %d: missing %q, want %d entries", tc.mode, tc.abi, missing, tc.missing)
		}
		if err != nil || tc.abi == 0 {
			if p != nil {
				t.Errorf("%s ABI %d: a plan with an error or without Landlock", tc.mode, tc.abi)
			}
			continue
		}
		if (p.Net != 0) != tc.net || (p.Scoped != 0) != tc.scoped || p.FS == 0 {
			t.Errorf("%s ABI %d: plan %+v", tc.mode, tc.abi, p)
		}
		if len(p.Exec) < 1 || p.Exec[0] == "" {
			t.Errorf("no executable in the plan: %q", p.Exec)
		}
	}
	if p, _, err := planLandlock(LandlockOff, 7, bin); p != nil || err != nil {
		t.Errorf("off: plan %+v, error %v", p, err)
	}
	if _, err := ParseLandlockMode("maybe"); err == nil {
		t.Error("ParseLandlockMode accepted maybe")
	}
}

// TestLandlockWall builds the wall in a child (this test binary
// re-executed) and checks, in the kernel, that the child can no longer
// read a file, make a directory or execute anything but its binary.
func TestLandlockWall(t *testing.T) {
	if landlockABI() < 1 {
		t.Skip("the kernel has no Landlock")
	}
	if os.Getenv("KFV_LANDLOCK_CHILD") != "" {
		return // the child's work is in TestMain (landlockChild)
	}
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "KFV_LANDLOCK_CHILD="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	for _, want := range []string{"read secret: refused", "mkdir: refused", "exec /bin/true: refused"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("child did not report %q:\n%s", want, out)
		}
	}
}

// landlockChild builds the wall around itself (this binary may execute)
// and reports what the kernel then refuses.
func landlockChild(dir string) {
	runtime.LockOSThread()
	bin, err := os.Executable()
	if err != nil {
		fmt.Println("executable:", err)
		os.Exit(1)
	}
	p, _, err := planLandlock(LandlockBestEffort, landlockABI(), bin)
	if err == nil {
		err = p.restrict()
	}
	if err != nil {
		fmt.Println("restrict:", err)
		os.Exit(1)
	}
	say := func(what string, err error) {
		if err != nil {
			fmt.Printf("%s: refused (%v)\n", what, err)
		} else {
			fmt.Printf("%s: allowed\n", what)
		}
	}
	_, err = os.ReadFile(filepath.Join(dir, "secret"))
	say("read secret", err)
	say("mkdir", os.Mkdir(filepath.Join(dir, "new"), 0o700))
	say("exec /bin/true", unix.Exec("/bin/true", []string{"true"}, nil))
}

// TestLandlockConflicts: the built-in profile, adapted to a VM with a
// writable 9p share, user networking and -daemonize, lets QEMU make no
// call itself that the wall refuses; a profile that lets it open files
// or signal others in the kernel is named in the warning, and the wall
// stands.
func TestLandlockConflicts(t *testing.T) {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := profiles.Builtin("qemu")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p, _, err := policy.PrepareProfile(b, []string{"-accel", "kvm", "-netdev", "user,id=n", "-daemonize", "-pidfile", filepath.Join(dir, "pid"),
		"-fsdev", "local,id=fs,path=" + dir + ",security_model=none", "-device", "virtio-9p-pci,fsdev=fs,mount_tag=s"}, nil, dir, os.DirFS("/"))
	if err != nil {
		t.Fatal(err)
	}
	plan, _, err := planLandlock(LandlockBestEffort, 6, bin)
	if err != nil {
		t.Fatal(err)
	}
	if why := landlockConflicts(plan, p); len(why) > 0 {
		t.Errorf("built-in profile: %q", why)
	}
	loose := *b
	loose.Syscalls = append([]profiles.SyscallRule{{Names: []string{"openat"}, Action: profiles.ActAllow, Reason: "t"},
		{Names: []string{"kill"}, Action: profiles.ActAllow, Reason: "t"}}, loose.Syscalls...)
	full := *plan
	why := strings.Join(landlockConflicts(plan, &loose), ", ")
	if !strings.Contains(why, "openat (allowed in the kernel)") || !strings.Contains(why, "kill to other processes") {
		t.Errorf("a profile allowing openat and kill in the kernel: %q", why)
	}
	if plan.FS != full.FS || plan.Scoped != full.Scoped {
		t.Errorf("the wall changed: %+v, was %+v", plan, full)
	}
}
