package policy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"kfv/profiles"
	"kfv/resources"
)

// escapeGlob quotes glob metacharacters so a path matches only itself.
func escapeGlob(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `{`, `\{`)
	return r.Replace(p)
}

// PreloadPaths returns the absolute paths in an environment's LD_PRELOAD
// (entries separated by spaces or colons, as ld.so reads them). Relative
// names are searched for by ld.so and are not returned.
func PreloadPaths(env []string) []string {
	var out []string
	for _, kv := range env {
		v, ok := strings.CutPrefix(kv, "LD_PRELOAD=")
		if !ok {
			continue
		}
		for _, p := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ':' }) {
			if strings.HasPrefix(p, "/") {
				out = append(out, filepath.Clean(p))
			}
		}
	}
	return out
}

// WithPreloadRule returns a copy of p with a rule, placed before the
// profile's own, that lets QEMU open the libraries its environment
// preloads and map them executable (never writable and executable at
// once). The operator chose to preload them, as they chose the command
// line; without the rule QEMU would start without them, or not at all.
func WithPreloadRule(p *profiles.Profile, paths []string) *profiles.Profile {
	if len(paths) == 0 {
		return p
	}
	globs := make([]string, 0, len(paths))
	for _, path := range paths {
		globs = append(globs, escapeGlob(path))
	}
	q := *p
	q.Rules = append([]profiles.VerdictRule{
		{
			Name:     "qemu-preload-open",
			Syscalls: []string{"open", "openat"},
			Paths:    globs,
			Verdict:  profiles.VerdictAllow,
			Reason:   "a library QEMU's environment preloads (LD_PRELOAD)",
		},
		{
			Name:     "qemu-preload-map",
			Syscalls: []string{"mmap"},
			Backing:  globs,
			Args:     []profiles.ArgCond{{Index: 2, Op: profiles.OpMaskedEq, Mask: protWrite, Values: []uint64{0}}},
			Verdict:  profiles.VerdictAllow,
			Reason:   "the dynamic loader maps a library QEMU's environment preloads (LD_PRELOAD), read-only and executable",
		},
	}, p.Rules...)
	return &q
}

// protWrite is PROT_WRITE (this file builds on every OS).
const protWrite = 0x2

// PrepareProfile adapts a profile to one QEMU: rules for the resources its
// command line names (derived by package resources: each file with the
// access its option implies, unix sockets, devices), for the libraries its
// environment preloads, and only the rules for the accelerators and
// features it uses. It fails on a command line QEMU would refuse; the
// strings are warnings for the operator (options that may name resources
// kfv does not derive).
func PrepareProfile(p *profiles.Profile, args, env []string, cwd string, fsys fs.FS) (*profiles.Profile, []string, error) {
	set, err := resources.FromArgs(args, cwd, fsys)
	if err != nil {
		return nil, nil, fmt.Errorf("QEMU command line: %w", err)
	}
	inet, warnings := InetRules(set, lookupHost)
	return prepare(p, set, inet, env, cwd), append(set.Warnings, warnings...), nil
}

// PrepareProgram adapts a profile to a program that is not QEMU: only the
// libraries its environment preloads are added.
func PrepareProgram(p *profiles.Profile, env []string) *profiles.Profile {
	return WithPreloadRule(p, PreloadPaths(env))
}

func prepare(p *profiles.Profile, set *resources.Set, inet []profiles.VerdictRule, env []string, cwd string) *profiles.Profile {
	q := *p
	at := inetRulesAt(p.Rules)
	rules := append([]profiles.VerdictRule(nil), p.Rules[:at]...)
	rules = append(rules, inet...)
	rules = append(rules, p.Rules[at:]...)
	q.Rules = append(rules, ResourceRules(set, cwd, Canonical)...)
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

// Open flag masks for access criteria (x86_64 values; this file builds on
// every OS).
const (
	oAccmode = 0x3
	oCreat   = 0x40
	oTrunc   = 0x200
	afUnix   = 1
)

// openArgsFor returns, per open-family syscall, the condition on its
// flags argument that an access allows.
func openArgsFor(a resources.Access) map[string][]profiles.ArgCond {
	var mask, value uint64
	switch a {
	case resources.ReadOnly:
		mask, value = oAccmode|oCreat|oTrunc, 0 // O_RDONLY, nothing created or truncated
	case resources.ReadWrite:
		mask, value = oCreat, 0 // any access mode, nothing created
	default:
		return map[string][]profiles.ArgCond{"openat": nil, "open": nil, "creat": nil}
	}
	c := func(i int) []profiles.ArgCond {
		return []profiles.ArgCond{{Index: i, Op: profiles.OpMaskedEq, Mask: mask, Values: []uint64{value}}}
	}
	return map[string][]profiles.ArgCond{"openat": c(2), "open": c(1)}
}

// ResourceRules turns a resource set into verdict rules placed after the
// profile's own (so the profile's denials still win): the VM's files,
// trees and devices with the access their options imply (by the path as
// given and by the canonical path), its unix sockets for connect or bind,
// and its working directory, read-only (QEMU opens "." at start-up).
func ResourceRules(set *resources.Set, cwd string, canon func(string) string) []profiles.VerdictRule {
	paths := map[resources.Access][]string{}
	add := func(a resources.Access, p string, pattern bool) {
		if p == "" {
			return
		}
		if pattern {
			paths[a] = append(paths[a], p)
			return
		}
		paths[a] = append(paths[a], escapeGlob(p))
		if c := canon(p); c != p {
			paths[a] = append(paths[a], escapeGlob(c))
		}
	}
	for _, f := range set.Files {
		add(f.Access, f.Abs, f.Pattern)
	}
	for _, d := range set.Dirs {
		add(d.Access, d.Abs, false)
		add(d.Access, strings.TrimSuffix(escapeGlob(d.Abs), "/")+"/**", true)
		if c := canon(d.Abs); c != d.Abs {
			add(d.Access, strings.TrimSuffix(escapeGlob(c), "/")+"/**", true)
		}
	}
	for _, d := range set.Devices {
		add(d.Access, d.Path, d.Pattern)
	}
	if cwd != "" {
		add(resources.ReadOnly, cwd, false)
	}
	var rules []profiles.VerdictRule
	for _, a := range []resources.Access{resources.ReadOnly, resources.ReadWrite, resources.Create} {
		if len(paths[a]) == 0 {
			continue
		}
		sort.Strings(paths[a])
		for _, sc := range []string{"openat", "open", "creat"} {
			conds, ok := openArgsFor(a)[sc]
			if !ok {
				continue
			}
			rules = append(rules, profiles.VerdictRule{
				Name:     "vm-" + a.String() + "-" + sc,
				Syscalls: []string{sc},
				Paths:    paths[a],
				Args:     conds,
				Verdict:  profiles.VerdictAllow,
				Reason:   "the VM's own " + a.String() + " resources, from QEMU's command line",
			})
		}
		if a == resources.Create {
			rules = append(rules, profiles.VerdictRule{
				Name:     "vm-create-unlink",
				Syscalls: []string{"unlink", "unlinkat"},
				Paths:    paths[a],
				Verdict:  profiles.VerdictAllow,
				Reason:   "QEMU removes what it created (pidfile, overlays) when it exits",
			})
		}
	}
	socks := map[string][]string{}
	for _, so := range set.Sockets {
		if so.Family != resources.FamilyUnix {
			continue
		}
		addr := so.Address
		if !strings.HasPrefix(addr, "@") {
			addr = escapeGlob(addr)
		}
		socks[so.Op] = append(socks[so.Op], addr)
	}
	for _, op := range []string{resources.OpConnect, resources.OpBind} {
		if len(socks[op]) == 0 {
			continue
		}
		sort.Strings(socks[op])
		rules = append(rules, profiles.VerdictRule{
			Name:      "vm-sockets-" + op,
			Syscalls:  []string{op},
			Families:  []int{afUnix},
			Addresses: socks[op],
			Verdict:   profiles.VerdictAllow,
			Reason:    "the VM's own unix sockets (" + op + "), from QEMU's command line",
		})
		if op == resources.OpBind {
			rules = append(rules, profiles.VerdictRule{
				Name:     "vm-sockets-unlink",
				Syscalls: []string{"unlink", "unlinkat"},
				Paths:    socks[op],
				Verdict:  profiles.VerdictAllow,
				Reason:   "QEMU replaces and removes its own server sockets",
			})
		}
	}
	return rules
}

// inetRulesAt returns where the VM's inet addresses go among a profile's
// rules: after the rules that refuse sockets to some threads (a vCPU
// thread connecting anywhere is a payload, whatever the address), before
// the first other rule about connects and sends, so that a profile rule
// that keeps payloads off the host's loopback does not refuse a chardev
// the operator pointed at 127.0.0.1.
func inetRulesAt(rules []profiles.VerdictRule) int {
	for i, r := range rules {
		sends := false
		for _, sc := range r.Syscalls {
			switch sc {
			case "connect", "sendto", "sendmsg", "sendmmsg":
				sends = true
			}
		}
		if sends && !(r.Verdict == profiles.VerdictDeny && len(r.Threads) > 0) {
			return i
		}
	}
	return len(rules)
}

// Address families for inet rules (x86_64 values).
const (
	afInet  = 2
	afInet6 = 10
)

// lookupHost resolves a host name on QEMU's command line the way QEMU
// will (getaddrinfo: /etc/hosts, then DNS), bounded so that a dead
// resolver cannot hold the launch.
func lookupHost(host string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// InetRules turns the inet addresses QEMU's command line connects to
// (socket chardevs and netdevs, NBD over TCP, migration targets...) into
// one allow rule for connect and for sends with an address, placed by
// inetRulesAt: the operator named these addresses. Host names are resolved once, at launch, with lookup;
// a name that does not resolve, or a port that is not a single number,
// is reported in the warnings and gets no rule (QEMU's connect to it is
// then refused, and says so in the event stream).
func InetRules(set *resources.Set, lookup func(string) ([]netip.Addr, error)) ([]profiles.VerdictRule, []string) {
	var addrs, warnings []string
	seen := map[string]bool{}
	for _, so := range set.Sockets {
		if so.Op != resources.OpConnect || (so.Family != resources.FamilyInet && so.Family != resources.FamilyInet6) {
			continue
		}
		host, port, err := resources.SplitHostPort(so.Address)
		var ae *resources.AddressError
		if errors.As(err, &ae) {
			err = errors.New("want " + ae.Want) // the warning names the address
		}
		if err == nil {
			var n uint64
			if n, err = strconv.ParseUint(port, 10, 16); err == nil && n == 0 {
				err = fmt.Errorf("port 0")
			}
		}
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("%s: connect address %q: %v; QEMU's connect to it will be refused", so.Option, so.Address, err))
			continue
		}
		if host == "" {
			host = "localhost" // QEMU's default for a socket without host=
		}
		ips := []netip.Addr{}
		if ip, err := netip.ParseAddr(host); err == nil {
			ips = append(ips, ip)
		} else if ips, err = lookup(host); err != nil || len(ips) == 0 {
			if err == nil {
				err = fmt.Errorf("no address")
			}
			warnings = append(warnings, fmt.Sprintf("%s: host %q does not resolve (%v); QEMU's connect to it will be refused", so.Option, host, err))
			continue
		}
		for _, ip := range ips {
			s := net.JoinHostPort(ip.Unmap().WithZone("").String(), port)
			if !seen[s] {
				seen[s] = true
				addrs = append(addrs, s)
			}
		}
	}
	if len(addrs) == 0 {
		return nil, warnings
	}
	sort.Strings(addrs)
	return []profiles.VerdictRule{{
		Name:      "vm-inet-connect",
		Syscalls:  []string{"connect", "sendto", "sendmsg", "sendmmsg"},
		Families:  []int{afInet, afInet6},
		Addresses: addrs,
		Verdict:   profiles.VerdictAllow,
		Reason:    "the inet addresses QEMU's command line connects to",
	}}, warnings
}

// WithServerSocketRule returns p with a rule that lets QEMU unlink the
// server sockets it was handed open (paths, as the supervisor reads them
// from the sockets themselves), placed after the profile's own rules like
// the other resources of the VM.
func WithServerSocketRule(p *profiles.Profile, paths []string) *profiles.Profile {
	if len(paths) == 0 {
		return p
	}
	globs := make([]string, 0, len(paths))
	for _, path := range paths {
		globs = append(globs, escapeGlob(path))
		if c := Canonical(path); c != path {
			globs = append(globs, escapeGlob(c))
		}
	}
	q := *p
	q.Rules = append(append([]profiles.VerdictRule(nil), p.Rules...), profiles.VerdictRule{
		Name:     "vm-inherited-server-sockets",
		Syscalls: []string{"unlink", "unlinkat"},
		Paths:    globs,
		Verdict:  profiles.VerdictAllow,
		Reason:   "QEMU removes the server sockets its manager bound and handed it open (e.g. libvirt's monitor) when it closes them",
	})
	return &q
}
