package policy

import (
	"io/fs"
	"testing"
	"testing/fstest"

	"kfv/orch"
	"kfv/profiles"
)

// TestMemoryRule: KVM memory slots over the files the command line names
// for guest RAM are admitted, by path; every other file-backed slot is
// still refused, on the same mount or in the same directory too.
func TestMemoryRule(t *testing.T) {
	base, err := profiles.Builtin("qemu")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-accel", "kvm", "-nodefaults", "-m", "2G",
		"-object", "memory-backend-file,id=ram0,size=1G,mem-path=/hp,share=on",
		"-object", "memory-backend-file,id=ram1,size=1G,mem-path=/srv/vm/ram.img",
		"-numa", "node,memdev=ram0", "-numa", "node,memdev=ram1"}
	fsys := fstest.MapFS{"hp": &fstest.MapFile{Mode: fs.ModeDir | 0o755}}
	p, _, err := PrepareProfile(base, args, nil, "/work", fsys)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := orch.NewRules(p)
	if err != nil {
		t.Fatal(err)
	}
	slot := func(backing string) *orch.Request {
		return &orch.Request{Syscall: "ioctl", Args: [6]uint64{9, kvmSetUserMemoryRegion}, Backing: backing, Thread: "qemu-system-x86"}
	}
	for _, c := range []struct {
		backing string
		want    profiles.Verdict
		rule    string
	}{
		{"/hp/qemu_back_mem.ram0.Ab12Cd (deleted)", profiles.VerdictAllow, "vm-memory-backend-slots"},
		{"/srv/vm/ram.img", profiles.VerdictAllow, "vm-memory-backend-slots"},
		{"/srv/vm/ram.img (deleted)", profiles.VerdictAllow, "vm-memory-backend-slots"},
		{"anon", profiles.VerdictAllow, "kvm-memslot-guest-ram"},
		{"/hp/other.file", profiles.VerdictDeny, "no-kvm-memslot-host-memory"},
		{"/hp/sub/qemu_back_mem.x.y (deleted)", profiles.VerdictDeny, "no-kvm-memslot-host-memory"},
		{"/srv/vm/disk.img", profiles.VerdictDeny, "no-kvm-memslot-host-memory"},
		{"/dev/hugepages/qemu_back_mem.pc.ram.Zz9 (deleted)", profiles.VerdictDeny, "no-kvm-memslot-host-memory"},
		{"/usr/lib/x86_64-linux-gnu/libc.so.6", profiles.VerdictDeny, "no-kvm-memslot-host-memory"},
		{"[heap]", profiles.VerdictDeny, "no-kvm-memslot-host-memory"},
		{"mixed", profiles.VerdictDeny, "no-kvm-memslot-host-memory"},
	} {
		if d := rs.Decide(slot(c.backing)); d.Action != c.want || d.Rule != c.rule {
			t.Errorf("slot over %q: %v by %q, want %v by %q", c.backing, d.Action, d.Rule, c.want, c.rule)
		}
	}
	// Without a memory-backend-file there is no such rule.
	p, _, err = PrepareProfile(base, []string{"-accel", "kvm", "-nodefaults"}, nil, "/work", fsys)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range p.Rules {
		if r.Name == "vm-memory-backend-slots" {
			t.Errorf("a VM without memory-backend-file has rule %s", r.Name)
		}
	}
}
