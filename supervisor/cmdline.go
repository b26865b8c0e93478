package supervisor

import (
	"path/filepath"
	"sort"
	"strings"

	"kfv/profiles"
)

// fileSyscalls are the syscalls a "named on QEMU's command line" rule
// covers: QEMU opens, creates and inspects what its command line names.
var fileSyscalls = []string{"open", "openat", "openat2", "creat", "newfstatat", "statx", "stat", "lstat", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "unlink", "unlinkat", "mkdir", "mkdirat", "rename", "renameat", "renameat2", "truncate", "chmod", "fchmodat", "utimensat", "statfs"}

// CmdlinePaths returns the absolute paths QEMU's arguments name: every
// option value (after "key=" and a "unix:" or "file:" prefix) that starts
// with "/", and relative values that exist under cwd. Exec-style values
// ("exec:...") are never taken: they name programs, not files.
//
// This is deliberately coarse: it does not know which option a value
// belongs to or whether QEMU opens it read-only. It lets a profile admit
// what the operator put on the command line without listing it by hand.
func CmdlinePaths(args []string, cwd string, exists func(string) bool) []string {
	seen := map[string]bool{}
	for _, a := range args {
		if strings.HasPrefix(a, "-") && !strings.Contains(a, "/") {
			continue // an option name
		}
		for _, part := range splitOpts(a) {
			if i := strings.IndexByte(part, '='); i >= 0 && !strings.HasPrefix(part, "/") {
				part = part[i+1:]
			}
			switch {
			case strings.HasPrefix(part, "exec:"):
				continue
			case strings.HasPrefix(part, "unix:"):
				part = part[len("unix:"):]
			case strings.HasPrefix(part, "file:"):
				part = part[len("file:"):]
			}
			if part == "" || strings.ContainsRune(part, 0) {
				continue
			}
			if !strings.HasPrefix(part, "/") {
				if cwd == "" || exists == nil || !exists(filepath.Join(cwd, part)) {
					continue
				}
				part = filepath.Join(cwd, part)
			}
			seen[filepath.Clean(part)] = true
		}
	}
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// splitOpts splits a QEMU option value at commas; ",," is a literal comma.
func splitOpts(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(out, cur.String())
}

// WithCmdlineRules returns a copy of p with two verdict rules appended
// after the profile's own (so the profile's denials still win) and before
// its default: file syscalls on the paths QEMU's command line names are
// allowed, and so are AF_UNIX connect and bind on them (QMP, chardev and
// migration sockets).
func WithCmdlineRules(p *profiles.Profile, paths []string) *profiles.Profile {
	if len(paths) == 0 {
		return p
	}
	q := *p
	q.Rules = append([]profiles.VerdictRule(nil), p.Rules...)
	globs := make([]string, 0, len(paths))
	for _, path := range paths {
		globs = append(globs, escapeGlob(path))
	}
	q.Rules = append(q.Rules,
		profiles.VerdictRule{
			Name:     "qemu-cmdline-files",
			Syscalls: fileSyscalls,
			Paths:    globs,
			Verdict:  profiles.VerdictAllow,
			Reason:   "named on QEMU's command line",
		},
		profiles.VerdictRule{
			Name:      "qemu-cmdline-sockets",
			Syscalls:  []string{"connect", "bind"},
			Families:  []int{1}, // AF_UNIX
			Addresses: globs,
			Verdict:   profiles.VerdictAllow,
			Reason:    "socket named on QEMU's command line",
		},
	)
	return &q
}

// escapeGlob quotes glob metacharacters so a path matches only itself.
func escapeGlob(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `{`, `\{`)
	return r.Replace(p)
}

// Accels returns the accelerators QEMU may use with these arguments, in
// QEMU's order of preference: -accel options, accel= of -machine, or
// -enable-kvm; with none of them QEMU 7.2 tries tcg, then kvm.
func Accels(args []string) []string {
	var out []string
	add := func(list string) {
		for _, a := range strings.Split(list, ":") {
			if a != "" && !slicesContains(out, a) {
				out = append(out, a)
			}
		}
	}
	for i := 0; i < len(args); i++ {
		if !strings.HasPrefix(args[i], "-") {
			continue
		}
		opt := strings.TrimPrefix(strings.TrimPrefix(args[i], "-"), "-")
		val := ""
		if k, v, ok := strings.Cut(opt, "="); ok {
			opt, val = k, v
		} else if i+1 < len(args) {
			val = args[i+1]
		}
		switch opt {
		case "accel":
			add(strings.SplitN(val, ",", 2)[0])
		case "machine", "M":
			for _, part := range splitOpts(val) {
				if v, ok := strings.CutPrefix(part, "accel="); ok {
					add(v)
				}
			}
		case "enable-kvm":
			add("kvm")
		}
	}
	if len(out) == 0 {
		return []string{"tcg", "kvm"}
	}
	return out
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
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
			Syscalls: []string{"open", "openat", "openat2"},
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

// PrepareProfile adapts a profile to one QEMU: rules for what its
// command line and environment name, and only the rules for the
// accelerators it may use.
func PrepareProfile(p *profiles.Profile, args, env []string, cwd string, exists func(string) bool) *profiles.Profile {
	// The cwd itself: QEMU opens "." at start-up.
	paths := append(CmdlinePaths(args, cwd, exists), cwd)
	p = WithCmdlineRules(p, paths)
	p = WithPreloadRule(p, PreloadPaths(env))
	return profiles.ForAccel(p, Accels(args))
}
