package supervisor

import (
	"reflect"
	"testing"

	"kfv/orch"
	"kfv/profiles"
)

func TestCmdlinePaths(t *testing.T) {
	exists := func(p string) bool { return p == "/work/disk.img" }
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"drive", []string{"-drive", "file=/var/lib/vm/a.qcow2,if=virtio,format=qcow2"}, []string{"/var/lib/vm/a.qcow2"}},
		{"qmp socket", []string{"-qmp", "unix:/run/kfv/q.sock,server=on,wait=off"}, []string{"/run/kfv/q.sock"}},
		{"bios", []string{"-bios", "/tmp/g/raw.bin"}, []string{"/tmp/g/raw.bin"}},
		{"relative existing", []string{"-hda", "disk.img"}, []string{"/work/disk.img"}},
		{"relative missing", []string{"-hda", "nothere.img"}, []string{}},
		{"exec never", []string{"-incoming", "exec:/bin/sh -c x"}, []string{}},
		{"escaped comma", []string{"-drive", "file=/a,,b.img,if=none"}, []string{"/a,b.img"}},
		{"cleaned", []string{"-kernel", "/boot/../boot/vmlinuz"}, []string{"/boot/vmlinuz"}},
		{"option names skipped", []string{"-nographic", "-m", "64"}, []string{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := CmdlinePaths(c.args, "/work", exists)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("CmdlinePaths(%q) = %q, want %q", c.args, got, c.want)
			}
		})
	}
}

func TestSplitOpts(t *testing.T) {
	got := splitOpts("a=1,,2,b=3,")
	want := []string{"a=1,2", "b=3", ""}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("splitOpts = %q, want %q", got, want)
	}
}

func TestAccels(t *testing.T) {
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"-accel", "kvm"}, []string{"kvm"}},
		{[]string{"-accel", "kvm,kernel-irqchip=on", "-accel", "tcg"}, []string{"kvm", "tcg"}},
		{[]string{"-machine", "q35,accel=kvm:tcg"}, []string{"kvm", "tcg"}},
		{[]string{"-M", "pc,accel=tcg"}, []string{"tcg"}},
		{[]string{"-enable-kvm"}, []string{"kvm"}},
		{[]string{"--accel=tcg"}, []string{"tcg"}},
		{[]string{"-m", "64"}, []string{"tcg", "kvm"}},
	}
	for _, c := range cases {
		if got := Accels(c.args); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Accels(%q) = %q, want %q", c.args, got, c.want)
		}
	}
}

func TestPreloadPaths(t *testing.T) {
	env := []string{"HOME=/root", "LD_PRELOAD=/opt/a.so libb.so:/x/../c.so"}
	got := PreloadPaths(env)
	want := []string{"/opt/a.so", "/c.so"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PreloadPaths = %q, want %q", got, want)
	}
}

func TestPreparedProfileDecisions(t *testing.T) {
	base, err := profiles.Builtin("qemu")
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"LD_PRELOAD=/opt/implant.so"}
	args := []string{"-accel", "kvm", "-drive", "file=/srv/vm/disk.img,if=virtio"}
	p := PrepareProfile(base, args, env, "/work", func(string) bool { return false })
	rs, err := orch.NewRules(p)
	if err != nil {
		t.Fatal(err)
	}
	const protRX, protRWX = 0x5, 0x7
	cases := []struct {
		name string
		req  orch.Request
		want orch.Action
		rule string
	}{
		{"preload opened", orch.Request{Syscall: "openat", Path: "/opt/implant.so"}, orch.Allow, "qemu-preload-open"},
		{"preload mapped rx", orch.Request{Syscall: "mmap", Args: [6]uint64{0, 4096, protRX}, Backing: "/opt/implant.so", Fds: map[int]string{4: "/opt/implant.so"}}, orch.Allow, "qemu-preload-map"},
		{"preload mapped rwx", orch.Request{Syscall: "mmap", Args: [6]uint64{0, 4096, protRWX}, Backing: "/opt/implant.so", Fds: map[int]string{4: "/opt/implant.so"}}, orch.Deny, ""},
		{"disk opened", orch.Request{Syscall: "openat", Path: "/srv/vm/disk.img"}, orch.Allow, "qemu-cmdline-files"},
		{"other disk", orch.Request{Syscall: "openat", Path: "/srv/vm/other.img"}, orch.Deny, "default"},
		{"cwd opened", orch.Request{Syscall: "openat", Path: "/work"}, orch.Allow, "qemu-cmdline-files"},
		{"kvm VM has no tcg buffer", orch.Request{Syscall: "mprotect", Args: [6]uint64{0, 4096, protRWX}, Backing: "anon", Thread: "qemu-system-x86"}, orch.Deny, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := rs.Decide(&c.req)
			if d.Action != c.want || (c.rule != "" && d.Rule != c.rule) {
				t.Errorf("Decide = %v by %q, want %v by %q", d.Action, d.Rule, c.want, c.rule)
			}
		})
	}
}
