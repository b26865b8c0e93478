package policy

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"kfv/profiles"
	"kfv/resources"
)

// PrepareProfile adapts a profile to one QEMU: rules for the resources its
// command line names (derived by package resources: each file with the
// access its option implies, unix sockets, devices), for the libraries its
// environment preloads, and only the rules for the accelerators and
// features it uses. It fails on a command line QEMU would refuse; the
// strings are warnings for the operator (options that may name resources
// kfv does not derive).
func PrepareProfile(p *profiles.Profile, args, env []string, cwd string, fsys fs.FS) (*profiles.Profile, []string, error) {
	set, err := resources.FromArgsEnv(args, cwd, env, fsys)
	if err != nil {
		return nil, nil, fmt.Errorf("QEMU command line: %w", err)
	}
	inet, warnings := InetRules(set, LookupHost)
	binds, bindWarnings := InetBindRules(set, LookupHost)
	return prepare(p, set, inet, binds, env, cwd), slices.Concat(set.Warnings, warnings, bindWarnings), nil
}

// PrepareProgram adapts a profile to a program that is not QEMU: only the
// libraries its environment preloads are added.
func PrepareProgram(p *profiles.Profile, env []string) *profiles.Profile {
	return WithPreloadRule(p, PreloadPaths(env))
}

func prepare(p *profiles.Profile, set *resources.Set, inet, binds []profiles.VerdictRule, env []string, cwd string) *profiles.Profile {
	q := *p
	at := inetRulesAt(p.Rules)
	rules := append([]profiles.VerdictRule(nil), p.Rules[:at]...)
	rules = append(rules, inet...)
	rules = append(rules, p.Rules[at:]...)
	at = daemonizeRuleAt(rules)
	rules = slices.Insert(rules, at, DaemonizeRule(set)...)
	rules = slices.Insert(rules, memoryRuleAt(rules), MemoryRule(set, Canonical)...)
	rules = slices.Insert(rules, kvmObjectRulesAt(rules), KVMObjectRules(set)...)
	q.Rules = append(rules, ResourceRules(set, cwd, Canonical)...)
	// The VM's inet listeners, with its other resources after the
	// profile's rules: no profile rule admits a bind or listen on inet by
	// class, so every one of its refusals wins.
	q.Rules = append(q.Rules, binds...)
	q.Rules = append(q.Rules, RunAsRules(set, LookupIDs)...)
	q.Syscalls = append(AddrConfigRule(set), q.Syscalls...)
	p = WithPreloadRule(&q, PreloadPaths(env))
	// The accelerators QEMU may use (resources: -accel, -machine
	// accel=, -enable-kvm; QEMU 7.2 tries tcg, then kvm, by default).
	features := append([]string(nil), set.Accels...)
	if set.NetUser {
		features = append(features, profiles.FeatureUserNet)
	}
	return profiles.ForFeatures(p, features)
}

// Canonical resolves symlinks, as the emulated open decides on the object
// reached; a path that does not exist (yet) stays as it is. It is the
// canon ResourceRules takes for the host kfv runs on.
func Canonical(p string) string {
	if c, err := filepath.EvalSymlinks(p); err == nil {
		return c
	}
	if c, err := filepath.EvalSymlinks(filepath.Dir(p)); err == nil {
		return filepath.Join(c, filepath.Base(p))
	}
	return p
}

// LookupHost resolves a host name on QEMU's command line the way QEMU
// will (getaddrinfo: /etc/hosts, then DNS), bounded so that a dead
// resolver cannot hold the launch.
func LookupHost(host string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}
