package supervisor

import (
	"reflect"
	"testing"
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
