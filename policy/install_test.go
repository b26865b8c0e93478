package policy

import (
	"os"
	"path/filepath"
	"testing"

	"kfv/orch"
	"kfv/profiles"
)

// qemuInstall makes DIR/usr/bin/qemu-system-x86_64 and, with bundle,
// DIR/usr/bin/qemu-bundle -> ../.. (as tools/qemu10.sh lays out an
// unpacked QEMU), and returns the binary's path.
func qemuInstall(t *testing.T, dir string, bundle bool) string {
	t.Helper()
	bin := filepath.Join(dir, "usr", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(bin, "qemu-system-x86_64")
	if err := os.WriteFile(exe, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if bundle {
		if err := os.Symlink("../..", filepath.Join(bin, "qemu-bundle")); err != nil {
			t.Fatal(err)
		}
	}
	return exe
}

func TestQEMUBundle(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	withBundle := qemuInstall(t, filepath.Join(root, "q10"), true)
	without := qemuInstall(t, filepath.Join(root, "sys"), false)
	// A link to the binary: QEMU finds its bundle beside the file the
	// link reaches (/proc/self/exe).
	link := filepath.Join(root, "qemu-link")
	if err := os.Symlink(withBundle, link); err != nil {
		t.Fatal(err)
	}
	notDir := qemuInstall(t, filepath.Join(root, "bad"), false)
	if err := os.WriteFile(filepath.Join(filepath.Dir(notDir), "qemu-bundle"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ bin, want string }{
		{withBundle, filepath.Join(root, "q10")},
		{link, filepath.Join(root, "q10")},
		{without, ""},
		{notDir, ""},
		{filepath.Join(root, "missing", "qemu-system-x86_64"), ""},
		{"qemu-system-x86_64", ""},
		{"", ""},
	} {
		if got := QEMUBundle(tt.bin); got != tt.want {
			t.Errorf("QEMUBundle(%q) = %q, want %q", tt.bin, got, tt.want)
		}
	}
}

func TestWithBundleRules(t *testing.T) {
	base, err := profiles.Builtin("qemu")
	if err != nil {
		t.Fatal(err)
	}
	if q := WithBundleRules(base, ""); q != base {
		t.Error("no bundle: the profile must come back unchanged")
	}
	const bundle = "/opt/qemu [10]"
	p := WithBundleRules(base, bundle)
	if len(base.Rules) != len(p.Rules)-2 {
		t.Errorf("the caller's profile was modified, or not two rules added: %d -> %d", len(base.Rules), len(p.Rules))
	}
	rs, err := orch.NewRules(p)
	if err != nil {
		t.Fatal(err)
	}
	const rdonly, rdwr, creat = 0x0, 0x2, 0x40 | 0x1
	const protRX, protRWX = 0x5, 0x7
	open := func(path string, flags uint64) orch.Request {
		return orch.Request{Syscall: "openat", Path: path, Args: [6]uint64{0, 0, flags}, Thread: "qemu-system-x86"}
	}
	mmap := func(backing string, prot uint64) orch.Request {
		return orch.Request{Syscall: "mmap", Args: [6]uint64{0, 4096, prot}, Backing: backing, Fds: map[int]string{4: backing}, Thread: "qemu-system-x86"}
	}
	for _, c := range []struct {
		name string
		req  orch.Request
		want profiles.Verdict
		rule string
	}{
		{"option ROM", open(bundle+"/usr/share/qemu/kvmvapic.bin", rdonly), profiles.VerdictAllow, "qemu-bundle-data"},
		{"BIOS", open(bundle+"/usr/share/seabios/bios-256k.bin", rdonly), profiles.VerdictAllow, "qemu-bundle-data"},
		{"keymap", open(bundle+"/usr/share/qemu/keymaps/en-us", rdonly), profiles.VerdictAllow, "qemu-bundle-data"},
		{"module", open(bundle+"/usr/lib/x86_64-linux-gnu/qemu/hw-display-virtio-gpu.so", rdonly), profiles.VerdictAllow, "qemu-bundle-data"},
		{"configuration", open(bundle+"/etc/qemu/qemu.conf", rdonly), profiles.VerdictAllow, "qemu-bundle-data"},
		{"firmware for writing", open(bundle+"/usr/share/qemu/kvmvapic.bin", rdwr), profiles.VerdictDeny, ""},
		{"file created in the data", open(bundle+"/usr/share/qemu/new", creat), profiles.VerdictDeny, ""},
		{"outside the relocated dirs", open(bundle+"/usr/bin/qemu-img", rdonly), profiles.VerdictDeny, ""},
		{"a glob in the bundle's name is literal", open("/opt/qemu 1/usr/share/qemu/kvmvapic.bin", rdonly), profiles.VerdictDeny, ""},
		{"another install's data", open("/opt/other/usr/share/qemu/kvmvapic.bin", rdonly), profiles.VerdictDeny, ""},
		{"module mapped rx", mmap(bundle+"/usr/lib/x86_64-linux-gnu/qemu/hw-display-virtio-gpu.so", protRX), profiles.VerdictAllow, "qemu-bundle-modules"},
		{"module mapped rwx", mmap(bundle+"/usr/lib/x86_64-linux-gnu/qemu/hw-display-virtio-gpu.so", protRWX), profiles.VerdictDeny, ""},
		{"firmware mapped rx", mmap(bundle+"/usr/share/qemu/kvmvapic.bin", protRX), profiles.VerdictDeny, ""},
		{"the system's data as before", open("/usr/share/qemu/kvmvapic.bin", rdonly), profiles.VerdictAllow, "qemu-data"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := rs.Decide(&c.req)
			if d.Action != c.want || (c.rule != "" && d.Rule != c.rule) {
				t.Errorf("Decide = %v by %q, want %v by %q", d.Action, d.Rule, c.want, c.rule)
			}
		})
	}
}
