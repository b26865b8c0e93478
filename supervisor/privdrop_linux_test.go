//go:build linux

package supervisor

import (
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"kfv/orch"
	"kfv/profiles"
)

func TestQEMUChangesUser(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"none", []string{"-m", "64", "-nodefaults"}, ""},
		{"runas", []string{"-runas", "nobody"}, "-runas nobody"},
		{"double dash", []string{"--runas", "nobody"}, "-runas nobody"},
		{"run-with", []string{"-run-with", "chroot=/x,user=nobody"}, "-run-with user=nobody"},
		{"run-with without user", []string{"-run-with", "async-teardown=on"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := qemuChangesUser(tc.args); got != tc.want {
				t.Errorf("qemuChangesUser(%q) = %q, want %q", tc.args, got, tc.want)
			}
		})
	}
}

func TestResolveRunAs(t *testing.T) {
	if os.Geteuid() != 0 {
		// Not root: the caller's own user is fine, any other an error.
		me, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"", me.Username, me.Uid} {
			if r, err := ResolveRunAs(name, nil); err != nil || r != nil {
				t.Errorf("ResolveRunAs(%q) = %+v, %v; want nil, nil", name, r, err)
			}
		}
		if _, err := ResolveRunAs("root", nil); err == nil || !strings.Contains(err.Error(), "only root") {
			t.Errorf("ResolveRunAs(root) as uid %d: %v, want an error saying only root can", os.Geteuid(), err)
		}
		return
	}
	if r, err := ResolveRunAs("root", nil); err != nil || !r.Root || r.drop() != nil {
		t.Errorf("ResolveRunAs(root) = %+v, %v; want QEMU kept root", r, err)
	}
	if _, err := ResolveRunAs("kfv-no-such-user", nil); err == nil || !strings.Contains(err.Error(), "kfv-no-such-user: no such user") {
		t.Errorf("ResolveRunAs of a missing user: %v, want an error naming it", err)
	}
	if r, err := ResolveRunAs("", []string{"-runas", "nobody"}); err != nil || r.QEMUDrops == "" || r.drop() != nil {
		t.Errorf("ResolveRunAs with QEMU's -runas = %+v, %v; want the drop left to QEMU", r, err)
	}
	if _, err := ResolveRunAs("nobody", []string{"-runas", "nobody"}); err == nil {
		t.Error("--run-as and QEMU's -runas together: no error")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	r, err := ResolveRunAs("nobody", nil)
	if err != nil {
		t.Fatal(err)
	}
	if strconv.Itoa(r.UID) != u.Uid || strconv.Itoa(r.GID) != u.Gid || r.drop() == nil {
		t.Errorf("ResolveRunAs(nobody) = %+v, want uid %s gid %s and a drop", r, u.Uid, u.Gid)
	}
}

func TestCheckStatus(t *testing.T) {
	d := &credDrop{User: "u", UID: 7, GID: 8, Groups: []int{8, 20}}
	good := "Name:\tx\nUid:\t7\t7\t7\t7\nGid:\t8\t8\t8\t8\nGroups:\t20 8 \nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\n"
	if err := checkStatus(good, d); err != nil {
		t.Errorf("good status: %v", err)
	}
	for name, bad := range map[string]string{
		"saved uid 0": strings.Replace(good, "Uid:\t7\t7\t7\t7", "Uid:\t7\t7\t0\t7", 1),
		"bounding":    strings.Replace(good, "CapBnd:\t0000000000000000", "CapBnd:\t000001ffffffffff", 1),
		"groups":      strings.Replace(good, "Groups:\t20 8 ", "Groups:\t0 8 20", 1),
		"no CapAmb":   strings.Replace(good, "CapAmb:\t0000000000000000\n", "", 1),
	} {
		if err := checkStatus(bad, d); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestRunAs runs a program through the loader with a drop to nobody, by
// path and by fd (from a directory nobody cannot search), and checks in
// the program's own /proc status that it has nobody's ids and no
// capability in any set.
func TestRunAs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("dropping QEMU's credentials needs root (kfv-run as root)")
	}
	r, err := ResolveRunAs("nobody", nil)
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	allow := funcDecider(func(*orch.Request) orch.Decision { return orch.Decision{Action: profiles.VerdictAllow, Rule: "t"} })
	private := t.TempDir() // 0700, root's
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	sh := filepath.Join(private, "sh")
	copyFile(t, "/bin/sh", sh)
	// A directory nobody may search, under one it may not.
	open := filepath.Join(private, "bin")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	inOpen := filepath.Join(open, "sh")
	copyFile(t, "/bin/sh", inOpen)
	for _, tc := range []struct {
		name, bin string
		comm      bool // the kernel names the process sh on every kernel
	}{{"by path", "/bin/sh", true}, {"by name in its directory", inOpen, true}, {"by fd", sh, false}} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "status")
			// The shell's open of out is performed by kfv, as root, in a
			// directory only root may write to: the file is nobody's all
			// the same.
			status, evs, err := runSupervisedAs(t, r, allow, tc.bin, "-c", "cat /proc/$$/comm > "+out+".comm; exec cat /proc/self/status > "+out)
			if err != nil || status != 0 {
				t.Fatalf("status %d, err %v, %d events", status, err, len(evs))
			}
			fi, err := os.Stat(out)
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != r.UID || int(st.Gid) != r.GID {
				t.Errorf("%s, created by kfv for the program, is owned by %d:%d, want %d:%d", out, st.Uid, st.Gid, r.UID, r.GID)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkStatus(string(b), r.drop()); err != nil {
				t.Error(err)
			}
			comm, err := os.ReadFile(out + ".comm")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: the shell's name is %q", tc.bin, strings.TrimSpace(string(comm)))
			if tc.comm && strings.TrimSpace(string(comm)) != "sh" {
				t.Errorf("the shell's name (comm) is %q, want sh", comm)
			}
			if !strings.Contains(string(b), "NoNewPrivs:\t1") {
				t.Error("no_new_privs is not set")
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
