package policy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"kfv/profiles"
	"kfv/resources"
	"kfv/sysent"
)

// The rules name the calls the syscall table says: every open and every
// removal kfv performs, and every call that sends to an address, so that
// a call added to the table is covered without an edit here.
func TestRulesFollowTheSyscallTable(t *testing.T) {
	set := &resources.Set{
		Files: []resources.File{
			{Path: "ro", Abs: "/vm/ro", Access: resources.ReadOnly},
			{Path: "rw", Abs: "/vm/rw", Access: resources.ReadWrite},
			{Path: "new", Abs: "/vm/new", Access: resources.Create},
		},
		Sockets: []resources.Socket{
			{Family: resources.FamilyUnix, Type: resources.Stream, Address: "/run/s", Op: resources.OpBind},
			{Family: resources.FamilyInet, Type: resources.Stream, Address: "192.0.2.1:22", Op: resources.OpConnect},
		},
	}
	rules := ResourceRules(set, "", func(p string) string { return p })
	inet, _ := InetRules(set, func(string) ([]netip.Addr, error) { return nil, nil })
	byName := map[string]profiles.VerdictRule{}
	for _, r := range append(rules, inet...) {
		byName[r.Name] = r
	}
	performs := func(p sysent.Performer) func(*sysent.Entry) bool {
		return func(e *sysent.Entry) bool { return e.Perform == p }
	}
	opens := sysent.Select(performs(sysent.PerformOpen))
	removals := sysent.Select(performs(sysent.PerformUnlink))
	sends := sysent.Select(func(e *sysent.Entry) bool { return e.Effect == sysent.SendToAddress })
	if len(opens) == 0 || len(removals) == 0 || len(sends) == 0 {
		t.Fatalf("the table names no opens (%q), removals (%q) or sends (%q)", opens, removals, sends)
	}

	for _, sc := range opens {
		e, _ := sysent.Lookup(sc)
		for _, a := range []resources.Access{resources.ReadOnly, resources.ReadWrite, resources.Create} {
			name := "vm-" + a.String() + "-" + sc
			r, ok := byName[name]
			// creat has no flags argument: it always creates.
			if want := e.FlagsArg >= 0 || a == resources.Create; ok != want {
				t.Errorf("%s: rule present %v, want %v", name, ok, want)
				continue
			}
			if !ok {
				continue
			}
			if !slices.Equal(r.Syscalls, []string{sc}) {
				t.Errorf("%s: syscalls %q", name, r.Syscalls)
			}
			if a != resources.Create && (len(r.Args) != 1 || r.Args[0].Index != e.FlagsArg) {
				t.Errorf("%s: args %+v, want a condition on argument %d (the flags)", name, r.Args, e.FlagsArg)
			}
		}
	}
	for _, name := range []string{"vm-create-unlink", "vm-sockets-unlink"} {
		if r := byName[name]; !slices.Equal(r.Syscalls, removals) {
			t.Errorf("%s: syscalls %q, want %q", name, r.Syscalls, removals)
		}
	}
	if r := byName["vm-inet-connect"]; !slices.Equal(r.Syscalls, sends) {
		t.Errorf("vm-inet-connect: syscalls %q, want %q", r.Syscalls, sends)
	}
	for _, sc := range sends {
		rs := []profiles.VerdictRule{{Name: "own-" + sc, Syscalls: []string{sc}}}
		if inetRulesAt(rs) != 0 {
			t.Errorf("inetRulesAt: a rule about %s is not one about sends", sc)
		}
	}

	p := WithServerSocketRule(&profiles.Profile{}, []string{"/run/m.sock"})
	if r := p.Rules[0]; !slices.Equal(r.Syscalls, removals) {
		t.Errorf("%s: syscalls %q, want %q", r.Name, r.Syscalls, removals)
	}
	p = WithPreloadRule(&profiles.Profile{}, []string{"/opt/x.so"})
	for _, sc := range p.Rules[0].Syscalls {
		if e, ok := sysent.Lookup(sc); !ok || e.Perform != sysent.PerformOpen || e.FlagsArg < 0 {
			t.Errorf("%s: %s is not an open with flags kfv performs", p.Rules[0].Name, sc)
		}
	}
}

// Rules built for one VM share no slice with another's.
func TestRulesShareNoSyscallList(t *testing.T) {
	a := WithServerSocketRule(&profiles.Profile{}, []string{"/a"})
	b := WithServerSocketRule(&profiles.Profile{}, []string{"/b"})
	a.Rules[0].Syscalls[0] = "changed"
	if b.Rules[0].Syscalls[0] == "changed" || removeCalls[0] == "changed" {
		t.Error("the rules share their syscall list")
	}
}

// A writable share gets its file work strictly under its directory (the
// directory itself is never made, renamed or removed) and its attribute
// changes on the whole tree; a read-only share gets neither.
func TestShareRules(t *testing.T) {
	set := &resources.Set{Dirs: []resources.Dir{
		{Path: "/srv/share", Abs: "/srv/share", Access: resources.Create, Share: true},
		{Path: "/srv/ro", Abs: "/srv/ro", Access: resources.ReadOnly, Share: true},
	}}
	got := map[string]profiles.VerdictRule{}
	for _, r := range ResourceRules(set, "", func(p string) string { return p }) {
		got[r.Name] = r
	}
	e, ok := got["vm-share-entries"]
	if !ok || !slices.Equal(e.Paths, []string{"/srv/share/*/**"}) || !slices.Contains(e.Syscalls, "renameat2") || !slices.Contains(e.Syscalls, "linkat") || !slices.Contains(e.Syscalls, "mkdirat") {
		t.Errorf("vm-share-entries: %+v", e)
	}
	a, ok := got["vm-share-attributes"]
	if !ok || !slices.Equal(a.Paths, []string{"/srv/share/**"}) || !slices.Contains(a.Syscalls, "fchownat") || !slices.Contains(a.Syscalls, "chmod") {
		t.Errorf("vm-share-attributes: %+v", a)
	}
	for _, r := range got {
		for _, p := range r.Paths {
			if strings.HasPrefix(p, "/srv/ro") && (r.Name == "vm-share-entries" || r.Name == "vm-share-attributes") {
				t.Errorf("%s names the read-only share: %v", r.Name, r.Paths)
			}
		}
	}
}
