package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// share-*: a payload in a QEMU with a writable 9p share uses the
// share's file calls (rename, link, chmod, chown, mkdir, symlink) on
// objects outside the share, through a symlink planted in it, through
// "..", and through /proc/self/fd/N of QEMU's fd on the VM's disk. Bare,
// every step takes effect; under kfv, which performs these calls on the
// objects it resolved and admits them only in the share's tree, none
// does. Each payload takes at most two steps: three denials within ten
// seconds pause the VM (the profile's ladder), and the attack suite
// wants the VM running after a refused payload.
func init() {
	renames := []string{"rename", "renameat", "renameat2"}
	chmods := []string{"chmod", "fchmodat", "fchmodat2"}
	for _, a := range []struct {
		name   string
		steps  []string
		denied [][]string
	}{
		{"share-rename", []string{"rename-in", "rename-out"}, [][]string{renames}},
		{"share-chmod", []string{"chmod-symlink", "chmod-fd"}, [][]string{chmods}},
		{"share-dotdot", []string{"chmod-dotdot"}, [][]string{chmods}},
		{"share-link-chown", []string{"link-in", "chown-symlink"}, [][]string{{"link", "linkat"}, {"chown", "fchownat", "lchown"}}},
		{"share-create", []string{"mkdir-symlink", "symlink-symlink"}, [][]string{{"mkdir", "mkdirat"}, {"symlink", "symlinkat"}}},
	} {
		steps := a.steps
		attacks = append(attacks, attack{
			name:   a.name,
			denied: a.denied,
			setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
				return shareEscapeSetup(t, r, steps)
			},
		})
	}
}

const shareEscapeOwner = 1234 // the payload's chown

func shareEscapeSetup(t *testing.T, r *attackRun, steps []string) (string, effectFunc) {
	share := filepath.Join(r.dir, "share")
	outside := filepath.Join(r.dir, "outside")
	for _, d := range []string{share, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A symlink planted in the share (by the guest, or by a payload
	// before): it leads out of the tree.
	if err := os.Symlink(outside, filepath.Join(share, "esc")); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		filepath.Join(share, "mine"): "in the share",
	}
	for _, f := range []string{"rename-victim", "link-victim", "chmod-victim", "dotdot-victim", "chown-victim"} {
		files[filepath.Join(outside, f)] = "outside the share: " + f
	}
	for p, data := range files {
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r.qargs = []string{"-fsdev", "local,id=kfvfs,path=" + share + ",security_model=none",
		"-device", "virtio-9p-pci,fsdev=kfvfs,mount_tag=kfvshare"}
	return share + "|" + strings.Join(steps, ","), func() (int, int, string) {
		var seen []string
		check := func(what string, ok bool) {
			step, _, _ := strings.Cut(what, ":")
			if ok && slices.Contains(steps, step) {
				seen = append(seen, what)
			}
		}
		exists := func(p string) bool { _, err := os.Lstat(p); return err == nil }
		mode := func(p string) os.FileMode {
			fi, err := os.Lstat(p)
			if err != nil {
				return 0
			}
			return fi.Mode().Perm()
		}
		check("rename-in: the outside file moved into the share", exists(filepath.Join(share, "stolen")) && !exists(filepath.Join(outside, "rename-victim")))
		check("rename-out: the share's file moved outside", exists(filepath.Join(outside, "planted")) && !exists(filepath.Join(share, "mine")))
		check("link-in: the outside file linked into the share", exists(filepath.Join(share, "linked")))
		check("chmod-symlink: the outside file's mode changed", mode(filepath.Join(outside, "chmod-victim")) == 0o777)
		check("chmod-dotdot: the outside file's mode changed", mode(filepath.Join(outside, "dotdot-victim")) == 0o777)
		check("chmod-fd: the VM's disk's mode changed", mode(r.disk) == 0o777)
		var st syscall.Stat_t
		check("chown-symlink: the outside file's owner changed", syscall.Lstat(filepath.Join(outside, "chown-victim"), &st) == nil && st.Uid == shareEscapeOwner)
		check("mkdir-symlink: a directory made outside", exists(filepath.Join(outside, "newdir")))
		check("symlink-symlink: a symlink made outside", exists(filepath.Join(outside, "newlink")))
		return len(seen), len(steps), fmt.Sprintf("%d of %d steps (%s) took effect outside the share: %s", len(seen), len(steps), strings.Join(steps, ","), strings.Join(seen, "; "))
	}
}
