package policy

import (
	"slices"
	"testing"

	"kfv/profiles"
	"kfv/resources"
)

// TestRunAsRules: -runas admits setgid and setuid to that user's ids only
// (and setuid(0), which fails once the user changed), setgroups; no
// -runas, no rule.
func TestRunAsRules(t *testing.T) {
	ids := func(name string) (uint64, uint64, bool) { return 65534, 65533, name == "nobody" }
	for _, args := range [][]string{{"-runas", "nobody"}, {"-run-with", "user=nobody"}} {
		set, err := resources.FromArgs(append([]string{"-accel", "tcg", "-nic", "none"}, args...), "/vm", nil)
		if err != nil {
			t.Fatal(err)
		}
		rules := RunAsRules(set, ids)
		want := map[string][]uint64{"vm-runas-setgid": {65533}, "vm-runas-setgroups": nil, "vm-runas-setuid": {65534, 0}}
		if len(rules) != len(want) {
			t.Fatalf("%q: %d rules, want %d", args, len(rules), len(want))
		}
		for _, r := range rules {
			v, ok := want[r.Name]
			if !ok || r.Verdict != profiles.VerdictAllow {
				t.Errorf("%q: unexpected rule %+v", args, r)
				continue
			}
			if v == nil {
				if len(r.Args) != 0 {
					t.Errorf("%s: args %+v", r.Name, r.Args)
				}
				continue
			}
			if len(r.Args) != 1 || r.Args[0].Index != 0 || !slices.Equal(r.Args[0].Values, v) {
				t.Errorf("%s: args %+v, want argument 0 in %v", r.Name, r.Args, v)
			}
		}
	}
	for _, args := range [][]string{nil, {"-runas", "nosuchuser"}} {
		set, err := resources.FromArgs(append([]string{"-accel", "tcg", "-nic", "none"}, args...), "/vm", nil)
		if err != nil {
			t.Fatal(err)
		}
		if r := RunAsRules(set, ids); r != nil {
			t.Errorf("%q: rules %+v, want none", args, r)
		}
	}
	if uid, gid, ok := LookupIDs("64055:64056"); !ok || uid != 64055 || gid != 64056 {
		t.Errorf("LookupIDs(64055:64056) = %d, %d, %v", uid, gid, ok)
	}
}

// TestAddrConfigRule: only a VM that connects to an inet address gets the
// silent refusal of glibc's netlink probe, and only of that socket.
func TestAddrConfigRule(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{[]string{"-chardev", "socket,id=c,host=127.0.0.1,port=4444"}, true},
		{[]string{"-chardev", "socket,id=c,host=127.0.0.1,port=4444,server=on,wait=off"}, false},
		{[]string{"-chardev", "socket,id=c,path=/run/s,server=on,wait=off"}, false},
		{nil, false},
	} {
		set, err := resources.FromArgs(append([]string{"-accel", "tcg", "-nic", "none"}, c.args...), "/vm", nil)
		if err != nil {
			t.Fatal(err)
		}
		r := AddrConfigRule(set)
		if (r != nil) != c.want {
			t.Errorf("%q: rule %+v, want one: %v", c.args, r, c.want)
			continue
		}
		if r == nil {
			continue
		}
		if len(r) != 1 || !r[0].Silent || r[0].Action != profiles.ActDeny || !slices.Equal(r[0].Names, []string{"socket"}) || len(r[0].Args) != 3 ||
			r[0].Args[0].Values[0] != afNetlink || r[0].Args[1].Values[0] != sockRawCloex || r[0].Args[2].Values[0] != netlinkRoute {
			t.Errorf("%q: rule %+v", c.args, r)
		}
	}
}
