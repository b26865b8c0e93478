package policy

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"kfv/orch"
	"kfv/profiles"
)

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
	args := []string{"-accel", "kvm", "-nodefaults", "-drive", "file=/srv/vm/disk.img,format=raw,if=virtio",
		"-cdrom", "/srv/iso/install.iso", "-pidfile", "/run/vm1.pid", "-qmp", "unix:/run/vm1.qmp,server=on,wait=off",
		"-chardev", "socket,id=log,host=127.0.0.1,port=4555", "-netdev", "socket,id=n1,connect=[2001:db8::5]:7000",
		"-chardev", "socket,id=named,host=logs.example,port=514", "-chardev", "udp,id=u,host=198.51.100.9,port=9999"}
	fsys := fstest.MapFS{}
	p, warnings, err := PrepareProfile(base, args, env, "/work", fsys)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(warnings, "\n"), `host "logs.example" does not resolve`) {
		t.Errorf("no warning for the host name that does not resolve: %q", warnings)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("warnings: %q", warnings)
	rs, err := orch.NewRules(p)
	if err != nil {
		t.Fatal(err)
	}
	const protRX, protRWX = 0x5, 0x7
	const rdonly, rdwr, creat = 0x0, 0x2, 0x40 | 0x1
	open := func(path string, flags uint64) orch.Request {
		return orch.Request{Syscall: "openat", Path: path, Args: [6]uint64{0, 0, flags}, Thread: "qemu-system-x86"}
	}
	connect := func(addr, thread string) orch.Request {
		return orch.Request{Syscall: "connect", Sock: &orch.SockAddr{Family: 2, Addr: netip.MustParseAddrPort(addr)}, Thread: thread}
	}
	cases := []struct {
		name string
		req  orch.Request
		want profiles.Verdict
		rule string
	}{
		{"preload opened", open("/opt/implant.so", rdonly), profiles.VerdictAllow, "qemu-preload-open"},
		{"preload mapped rx", orch.Request{Syscall: "mmap", Args: [6]uint64{0, 4096, protRX}, Backing: "/opt/implant.so", Fds: map[int]string{4: "/opt/implant.so"}}, profiles.VerdictAllow, "qemu-preload-map"},
		{"preload mapped rwx", orch.Request{Syscall: "mmap", Args: [6]uint64{0, 4096, protRWX}, Backing: "/opt/implant.so", Fds: map[int]string{4: "/opt/implant.so"}}, profiles.VerdictDeny, ""},
		{"disk read-write", open("/srv/vm/disk.img", rdwr), profiles.VerdictAllow, "vm-read-write-openat"},
		{"disk may not be created", open("/srv/vm/disk.img", creat), profiles.VerdictDeny, ""},
		{"cdrom read-only", open("/srv/iso/install.iso", rdonly), profiles.VerdictAllow, "vm-read-only-openat"},
		{"cdrom not for writing", open("/srv/iso/install.iso", rdwr), profiles.VerdictDeny, ""},
		{"pidfile created", open("/run/vm1.pid", creat), profiles.VerdictAllow, "vm-create-openat"},
		{"other disk", open("/srv/vm/other.img", rdwr), profiles.VerdictDeny, "default"},
		{"cwd opened", open("/work", rdonly), profiles.VerdictAllow, "vm-read-only-openat"},
		{"qmp socket bound", orch.Request{Syscall: "bind", Sock: &orch.SockAddr{Family: 1, Path: "/run/vm1.qmp"}, Thread: "qemu-system-x86"}, profiles.VerdictAllow, "vm-sockets-bind"},
		{"kvm VM has no tcg buffer", orch.Request{Syscall: "mprotect", Args: [6]uint64{0, 4096, protRWX}, Backing: "anon", Thread: "qemu-system-x86"}, profiles.VerdictDeny, ""},
		{"chardev on the loopback", connect("127.0.0.1:4555", "qemu-system-x86"), profiles.VerdictAllow, "vm-inet-connect"},
		{"netdev over IPv6", connect("[2001:db8::5]:7000", "qemu-system-x86"), profiles.VerdictAllow, "vm-inet-connect"},
		{"udp chardev send", orch.Request{Syscall: "sendto", Args: [6]uint64{4: 0x7f0000001000}, Sock: &orch.SockAddr{Family: 2, Addr: netip.MustParseAddrPort("198.51.100.9:9999")}, Thread: "qemu-system-x86"}, profiles.VerdictAllow, "vm-inet-connect"},
		{"loopback, another port", connect("127.0.0.1:4556", "qemu-system-x86"), profiles.VerdictDeny, "no-host-local-inet"},
		{"vCPU thread to the chardev", connect("127.0.0.1:4555", "CPU 0/KVM"), profiles.VerdictDeny, "no-network-from-device-threads"},
		{"no user net: no inet connect", orch.Request{Syscall: "connect", Sock: &orch.SockAddr{Family: 2, Addr: netip.MustParseAddrPort("203.0.113.7:80")}, Thread: "qemu-system-x86"}, profiles.VerdictDeny, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := rs.Decide(&c.req)
			if d.Action != c.want || (c.rule != "" && d.Rule != c.rule) {
				t.Errorf("Decide = %v by %q, want %v by %q", d.Action, d.Rule, c.want, c.rule)
			}
		})
	}
	if _, _, err := PrepareProfile(base, []string{"-m=5"}, nil, "/work", fsys); err == nil {
		t.Error("PrepareProfile accepted a command line QEMU refuses")
	}
}

func TestWithServerSocketRule(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "monitor.sock")
	// A server socket reached through a link is admitted by both names.
	if err := os.Symlink(dir, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	linked := filepath.Join(dir, "link", "other.sock")

	p := &profiles.Profile{Rules: []profiles.VerdictRule{{Name: "own"}}}
	if q := WithServerSocketRule(p, nil); q != p {
		t.Error("no paths: the profile must come back unchanged")
	}
	q := WithServerSocketRule(p, []string{path, linked})
	if len(p.Rules) != 1 {
		t.Error("the caller's profile was modified")
	}
	if len(q.Rules) != 3 || q.Rules[0].Name != "own" {
		t.Fatalf("rules %+v: the profile's own rule must stay first", q.Rules)
	}
	r := q.Rules[1]
	if !slices.Equal(r.Syscalls, []string{"unlink", "unlinkat"}) || r.Verdict != profiles.VerdictAllow {
		t.Errorf("rule %+v: want unlink/unlinkat allowed", r)
	}
	for _, want := range []string{path, linked, Canonical(linked)} {
		if !slices.Contains(r.Paths, escapeGlob(want)) {
			t.Errorf("rule paths %q: %s is missing", r.Paths, want)
		}
	}
	// QEMU listens on them again (socket_listen of fd=): their addresses,
	// as the sockets give them, and nothing else.
	if l := q.Rules[2]; !slices.Equal(l.Syscalls, []string{"listen"}) || !slices.Equal(l.Addresses, []string{escapeGlob(path), escapeGlob(linked)}) {
		t.Errorf("listen rule %+v: want listen on %s and %s", l, path, linked)
	}
}
