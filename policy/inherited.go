package policy

import (
	"path/filepath"
	"strings"

	"kfv/profiles"
	"kfv/sysent"
)

// protWrite is PROT_WRITE (this package builds on every OS).
const protWrite = 0x2

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
// The opens are those kfv performs that take flags (a library is not
// made with creat).
func WithPreloadRule(p *profiles.Profile, paths []string) *profiles.Profile {
	if len(paths) == 0 {
		return p
	}
	globs := literalGlobs(paths, nil)
	var opens []string
	for _, sc := range openCalls {
		if e, _ := sysent.Lookup(sc); e.FlagsArg >= 0 {
			opens = append(opens, sc)
		}
	}
	q := *p
	q.Rules = append([]profiles.VerdictRule{
		allow("qemu-preload-open", opens, globs, "a library QEMU's environment preloads (LD_PRELOAD)"),
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

// WithServerSocketRule returns p with rules for the server sockets QEMU
// was handed open (paths, as the supervisor reads them from the sockets
// themselves), placed after the profile's own rules like the other
// resources of the VM: QEMU unlinks them when it closes them, and listens
// on them again (socket_listen of an fd= address calls listen, which on a
// socket already listening only sets its backlog).
func WithServerSocketRule(p *profiles.Profile, paths []string) *profiles.Profile {
	if len(paths) == 0 {
		return p
	}
	q := *p
	addrs := make([]string, len(paths))
	for i, path := range paths {
		addrs[i] = escapeGlob(path)
	}
	q.Rules = append(append([]profiles.VerdictRule(nil), p.Rules...), allow("vm-inherited-server-sockets", removeCalls,
		literalGlobs(paths, Canonical),
		"QEMU removes the server sockets its manager bound and handed it open (e.g. libvirt's monitor) when it closes them"),
		profiles.VerdictRule{
			Name:      "vm-inherited-server-listen",
			Syscalls:  []string{"listen"},
			Families:  []int{afUnix},
			Addresses: addrs,
			Verdict:   profiles.VerdictAllow,
			Reason:    "QEMU listens again on the server sockets its manager bound and handed it open (-chardev socket,fd=N,server=on): their backlog",
		})
	return &q
}
