package policy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"kfv/orch"
	"kfv/profiles"
	"kfv/resources"
)

// The binds and listens the built-in profile admits are exactly the VM's:
// each listener of its command line, nothing by class.
func TestPreparedBindDecisions(t *testing.T) {
	base, err := profiles.Builtin("qemu")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-accel", "tcg", "-nodefaults",
		"-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp::5353-:53",
		"-vnc", "127.0.0.1:1,to=3",
		"-chardev", "socket,id=c0,host=::1,port=4444,server=on,wait=off",
		"-chardev", "socket,id=c1,host=127.0.0.2,port=0,server=on,wait=off",
		"-incoming", "tcp::4446",
		"-qmp", "unix:/run/vm1.qmp,server=on,wait=off"}
	p, warnings, err := PrepareProfile(base, args, nil, "/work", fstest.MapFS{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("warnings: %q", warnings)
	rs, err := orch.NewRules(p)
	if err != nil {
		t.Fatal(err)
	}
	inet := func(call, addr, thread string) orch.Request {
		ap := netip.MustParseAddrPort(addr)
		fam := 2
		if ap.Addr().Is6() {
			fam = 10
		}
		return orch.Request{Syscall: call, Sock: &orch.SockAddr{Family: fam, Addr: ap}, Thread: thread}
	}
	const main = "qemu-system-x86"
	cases := []struct {
		name string
		req  orch.Request
		want profiles.Verdict
		rule string
	}{
		{"hostfwd tcp bind", inet("bind", "127.0.0.1:2222", main), profiles.VerdictAllow, "vm-inet-bind"},
		{"hostfwd tcp listen", inet("listen", "127.0.0.1:2222", main), profiles.VerdictAllow, "vm-inet-listen"},
		{"hostfwd tcp, other address", inet("bind", "0.0.0.0:2222", main), profiles.VerdictDeny, "default"},
		{"hostfwd udp, wildcard host", inet("bind", "0.0.0.0:5353", main), profiles.VerdictAllow, "vm-inet-bind"},
		{"hostfwd udp, any address of the host", inet("bind", "[::]:5353", main), profiles.VerdictAllow, "vm-inet-bind"},
		{"hostfwd udp is not listened on", inet("listen", "0.0.0.0:5353", main), profiles.VerdictDeny, "default"},
		{"vnc display 1", inet("bind", "127.0.0.1:5901", main), profiles.VerdictAllow, "vm-inet-bind"},
		{"vnc to=3", inet("listen", "127.0.0.1:5903", main), profiles.VerdictAllow, "vm-inet-listen"},
		{"vnc past to=", inet("bind", "127.0.0.1:5904", main), profiles.VerdictDeny, "default"},
		{"chardev on ::1", inet("bind", "[::1]:4444", main), profiles.VerdictAllow, "vm-inet-bind"},
		{"chardev on ::1 is not 127.0.0.1", inet("bind", "127.0.0.1:4444", main), profiles.VerdictDeny, "default"},
		{"port 0 binds port 0", inet("bind", "127.0.0.2:0", main), profiles.VerdictAllow, "vm-inet-bind"},
		{"port 0 is not any port", inet("bind", "127.0.0.2:8080", main), profiles.VerdictDeny, "default"},
		{"port 0: listen on the kernel's port", inet("listen", "127.0.0.2:40123", main), profiles.VerdictAllow, "vm-inet-listen"},
		{"incoming, every address", inet("bind", "[2001:db8::1]:4446", main), profiles.VerdictAllow, "vm-inet-bind"},
		{"backdoor bind", inet("bind", "0.0.0.0:31337", main), profiles.VerdictDeny, "default"},
		{"listen on an unbound socket", inet("listen", "0.0.0.0:0", main), profiles.VerdictDeny, "default"},
		{"listen on an unbound IPv6 socket", inet("listen", "[::]:0", main), profiles.VerdictDeny, "default"},
		{"vCPU thread binds the VM's port", inet("bind", "127.0.0.1:2222", "CPU 0/TCG"), profiles.VerdictDeny, "no-network-from-device-threads"},
		{"worker listens on the VM's port", inet("listen", "127.0.0.1:2222", "worker"), profiles.VerdictDeny, "no-network-from-device-threads"},
		{"qmp socket listen", orch.Request{Syscall: "listen", Sock: &orch.SockAddr{Family: 1, Path: "/run/vm1.qmp"}, Thread: main}, profiles.VerdictAllow, "vm-sockets-bind"},
		{"other unix socket listen", orch.Request{Syscall: "listen", Sock: &orch.SockAddr{Family: 1, Path: "/run/other.qmp"}, Thread: main}, profiles.VerdictDeny, "default"},
		{"listen on what getsockname could not read", orch.Request{Syscall: "listen", Thread: main}, profiles.VerdictDeny, "default"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := rs.Decide(&c.req)
			if d.Action != c.want || (c.rule != "" && d.Rule != c.rule) {
				t.Errorf("Decide = %v by %q, want %v by %q", d.Action, d.Rule, c.want, c.rule)
			}
		})
	}
	// The profile admits no inet bind or listen by class any more.
	for _, r := range base.Rules {
		if r.Verdict == profiles.VerdictAllow && (slices.Contains(r.Syscalls, "bind") || slices.Contains(r.Syscalls, "listen")) {
			t.Errorf("profile rule %s allows bind or listen by class", r.Name)
		}
	}
}

func TestInetBindRulesHostNames(t *testing.T) {
	set := &resources.Set{Sockets: []resources.Socket{
		{Family: resources.FamilyInet, Type: resources.Stream, Address: "localhost:5900", Op: resources.OpBind, Option: "-vnc"},
		{Family: resources.FamilyInet, Type: resources.Stream, Address: "nowhere.example:1", Op: resources.OpBind, Option: "-gdb"},
		{Family: resources.FamilyInet, Type: resources.Stream, Address: "127.0.0.1:ssh", Op: resources.OpBind, Option: "-chardev"},
		{Family: resources.FamilyInet, Type: resources.Dgram, Address: "192.0.2.1:9000", Op: resources.OpBind, Option: "-chardev udp"},
		{Family: resources.FamilyInet, Type: resources.Stream, Address: "192.0.2.1:22", Op: resources.OpConnect, Option: "-chardev"},
	}}
	lookup := func(h string) ([]netip.Addr, error) {
		if h == "localhost" {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}, nil
		}
		return nil, nil
	}
	rules, warnings := InetBindRules(set, lookup)
	if len(rules) != 2 {
		t.Fatalf("rules %+v, want vm-inet-bind and vm-inet-listen", rules)
	}
	if want := []string{"127.0.0.1:5900", "192.0.2.1:9000", "[::1]:5900"}; !slices.Equal(rules[0].Addresses, want) {
		t.Errorf("vm-inet-bind addresses %q, want %q", rules[0].Addresses, want)
	}
	if want := []string{"127.0.0.1:5900", "[::1]:5900"}; !slices.Equal(rules[1].Addresses, want) {
		t.Errorf("vm-inet-listen addresses %q, want %q (a datagram socket is not listened on)", rules[1].Addresses, want)
	}
	w := strings.Join(warnings, "\n")
	for _, want := range []string{`"nowhere.example:1"`, `"127.0.0.1:ssh"`} {
		if !strings.Contains(w, want) {
			t.Errorf("no warning for %s: %q", want, warnings)
		}
	}
	if len(warnings) != 2 {
		t.Errorf("warnings %q, want two", warnings)
	}
}
