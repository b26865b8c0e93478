package orch

import (
	"testing"

	"kfv/profiles"
)

// A rule with Ifnames admits a TUNSETIFF only for exactly those names:
// "tap%d" is the kernel's template, not a glob, and a call whose struct
// was not read matches no such rule.
func TestRuleIfnames(t *testing.T) {
	const tunsetiff = 0x400454ca
	p := &profiles.Profile{Name: "t", DefaultAction: profiles.ActInspect, DefaultVerdict: profiles.VerdictDeny, Rules: []profiles.VerdictRule{{
		Name:     "vm-tap-setiff",
		Syscalls: []string{"ioctl"},
		Args:     []profiles.ArgCond{{Index: 1, Op: profiles.OpEq, Values: []uint64{tunsetiff}}},
		Ifnames:  []string{"kfvtap0", "tap%d"},
		Verdict:  profiles.VerdictAllow,
		Reason:   "r",
	}}}
	rs, err := NewRules(p)
	if err != nil {
		t.Fatal(err)
	}
	req := func(name string, read bool) *Request {
		r := &Request{Syscall: "ioctl", Args: [6]uint64{5, tunsetiff}, Ifname: name, Fds: map[int]string{0: "/dev/net/tun"}}
		if read {
			r.Ifreq = make([]byte, 40)
			copy(r.Ifreq, name)
		}
		return r
	}
	for _, c := range []struct {
		name string
		req  *Request
		want profiles.Verdict
	}{
		{"the VM's tap", req("kfvtap0", true), profiles.VerdictAllow},
		{"the kernel's template", req("tap%d", true), profiles.VerdictAllow},
		{"another VM's tap", req("kfvtap1", true), profiles.VerdictDeny},
		{"a name the template would give", req("tap0", true), profiles.VerdictDeny},
		{"a prefix", req("kfvtap", true), profiles.VerdictDeny},
		{"the struct was not read", req("kfvtap0", false), profiles.VerdictDeny},
	} {
		if d := rs.Decide(c.req); d.Action != c.want {
			t.Errorf("%s: %v by %s, want %v", c.name, d.Action, d.Rule, c.want)
		}
	}
}
