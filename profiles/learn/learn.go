// Package learn turns the denials of a run into an overlay (profiles,
// overlay.go): the rules the run would have needed, for what the profile
// does not know about a site's configurations.
//
// Learning admits nothing dangerous by itself. A call of a dangerous
// class is listed as a comment for the operator to decide, never written
// as a rule: a call the profile denies by a rule of its own (an overlay
// cannot override those, its rules come after the profile's), program
// execution and process creation, executable memory, calls on other
// processes (kfv's supervisor among them), paths outside the VM's own
// directories, servers on the host's network, sockets other than unix and
// inet ones, and ioctls (a rule cannot name the device an ioctl reaches).
//
// The VM's directories are those of the files the run's own decisions
// admitted as the VM's (rules vm-* and qmp:*, derived from its command
// line and its manager's commands), below the top level of the file
// system: a disk image in /srv/vm1 makes /srv/vm1 the VM's, a working
// directory /tmp/x does not make /tmp the VM's.
package learn

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"kfv/event"
)

// Call is one distinct denied call: the same syscall on the same object
// with the same access.
type Call struct {
	Syscall string
	Path    string // the path it names, "" for none
	Access  string // open access mode: O_RDONLY, O_WRONLY, O_RDWR; "" when not an open
	Family  int    // socket address family, 0 for none
	Addr    string // socket address, as kfv renders it
	Rule    string // the profile's rule that denied it ("default": none matched)
	Args    [6]uint64
	Count   int
	Threads []string
	// Why is, for a call left to the operator, why it was not learned;
	// "" for a call written as a rule.
	Why string
}

// Result is what a run's events teach.
type Result struct {
	Profile string // the profile the run used, as its events name it ("builtin:qemu")
	Denials int    // denied calls seen
	VMDirs  []string
	Rules   []*Call // calls written as rules
	Decide  []*Call // calls left to the operator
}

var (
	argsRe    = regexp.MustCompile(`args=\[(0x[0-9a-f]+) (0x[0-9a-f]+) (0x[0-9a-f]+) (0x[0-9a-f]+) (0x[0-9a-f]+) (0x[0-9a-f]+)\]`)
	familyRe  = regexp.MustCompile(`family=(\d+) addr=("(?:[^"\\]|\\.)*")`)
	profileRe = regexp.MustCompile(` under profile (\S+) \(`)
)

// pathOf reads key="..." from a decision's argument summary.
func pathOf(args, key string) string {
	i := strings.Index(args, key+`="`)
	if i < 0 || (i > 0 && args[i-1] != ' ') {
		return ""
	}
	rest := args[i+len(key)+1:]
	s, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return ""
	}
	u, err := strconv.Unquote(s)
	if err != nil {
		return ""
	}
	return u
}

// Read learns from event streams.
func Read(streams ...io.Reader) (*Result, error) {
	r := &Result{}
	byKey := map[string]*Call{}
	var order []*Call
	vmDirs := map[string]bool{}
	for si, in := range streams {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for line := 1; sc.Scan(); line++ {
			var e event.Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				return nil, fmt.Errorf("stream %d, line %d: not an event: %v", si+1, line, err)
			}
			if e.Kind == event.KindLifecycle && r.Profile == "" {
				if m := profileRe.FindStringSubmatch(e.Detail); m != nil {
					r.Profile = m[1]
				}
			}
			if e.Kind != event.KindDecision || e.Source != "seccomp" {
				continue
			}
			if e.Verdict != "deny" {
				if strings.HasPrefix(e.Rule, "vm-") || strings.HasPrefix(e.Rule, "qmp:") {
					if d := vmDir(pathOf(e.Args, "path")); d != "" {
						vmDirs[d] = true
					}
				}
				continue
			}
			r.Denials++
			c := &Call{Syscall: e.Syscall, Path: pathOf(e.Args, "path"), Rule: e.Rule}
			if m := argsRe.FindStringSubmatch(e.Args); m != nil {
				for i := range 6 {
					c.Args[i], _ = strconv.ParseUint(m[i+1][2:], 16, 64)
				}
			}
			if m := familyRe.FindStringSubmatch(e.Args); m != nil {
				c.Family, _ = strconv.Atoi(m[1])
				c.Addr, _ = strconv.Unquote(m[2])
			}
			switch c.Syscall {
			case "openat":
				c.Access = accessName(c.Args[2])
			case "open":
				c.Access = accessName(c.Args[1])
			}
			if p2 := pathOf(e.Args, "path2"); p2 != "" {
				c.Path += "\x00" + p2 // both paths name the call
			}
			key := strings.Join([]string{c.Syscall, c.Path, c.Access, strconv.Itoa(c.Family), c.Addr, c.Rule, keyArgs(c)}, "\x01")
			if prev, ok := byKey[key]; ok {
				c = prev
			} else {
				byKey[key] = c
				order = append(order, c)
			}
			c.Count++
			if e.Thread != "" && !slices.Contains(c.Threads, e.Thread) {
				c.Threads = append(c.Threads, e.Thread)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("stream %d: %w", si+1, err)
		}
	}
	for d := range vmDirs {
		r.VMDirs = append(r.VMDirs, d)
	}
	slices.Sort(r.VMDirs)
	for _, c := range order {
		if c.Why = r.danger(c); c.Why != "" {
			r.Decide = append(r.Decide, c)
		} else {
			r.Rules = append(r.Rules, c)
		}
	}
	return r, nil
}

// vmDir is the VM directory an admitted path makes: its directory, below
// the top level of the file system. A directory admitted itself (QEMU's
// working directory) makes none: its parent is not the VM's. The host is
// asked, as learning runs where the VM ran; a path gone since counts as
// a file.
func vmDir(p string) string {
	if p == "" {
		return ""
	}
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		return ""
	}
	if d := filepath.Dir(p); strings.Count(d, "/") >= 2 {
		return d
	}
	return ""
}

// keyArgs is what of the raw arguments tells calls apart: the request of
// an ioctl, the protection of a memory call, the type of a socket.
func keyArgs(c *Call) string {
	switch c.Syscall {
	case "ioctl":
		return strconv.FormatUint(c.Args[1]&0xffffffff, 16)
	case "mmap", "mprotect", "pkey_mprotect":
		return strconv.FormatUint(c.Args[2]&0xffffffff, 16)
	case "socket":
		return strconv.FormatUint(c.Args[0]&0xffffffff, 16) + "/" + strconv.FormatUint(c.Args[1]&0xf, 16)
	}
	return ""
}

func accessName(flags uint64) string {
	switch flags & 3 {
	case 0:
		return "O_RDONLY"
	case 1:
		return "O_WRONLY"
	}
	return "O_RDWR"
}

// Syscall classes never learned.
var (
	execCalls  = []string{"execve", "execveat", "fork", "vfork", "clone", "clone3"}
	memCalls   = []string{"mmap", "mprotect", "pkey_mprotect"}
	otherProcs = []string{"kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open", "pidfd_send_signal", "pidfd_getfd",
		"ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "sched_setaffinity", "sched_setparam", "sched_setscheduler",
		"sched_setattr", "setpriority", "ioprio_set", "prlimit64", "migrate_pages", "move_pages", "fcntl", "seccomp"}
	sockCalls = []string{"socket", "socketpair", "connect", "bind", "listen", "sendto", "sendmsg", "sendmmsg"}
)

const (
	afUnix  = 1
	afInet  = 2
	afInet6 = 10
	sockRaw = 3
	protExe = 4
)

// danger says why a call is left to the operator, "" when it may be
// learned.
func (r *Result) danger(c *Call) string {
	switch {
	case c.Rule != "default" && c.Rule != "":
		return fmt.Sprintf("denied by the profile's own rule %q: an overlay's rules come after the profile's and cannot admit it; change the profile itself if the call is right", c.Rule)
	case slices.Contains(execCalls, c.Syscall):
		return "runs a program or makes a process: kfv never learns that"
	case slices.Contains(memCalls, c.Syscall) && c.Args[2]&protExe != 0:
		return "makes memory executable: kfv never learns that"
	case slices.Contains(otherProcs, c.Syscall):
		return "acts on a process, its signals or its filter: kfv never learns that"
	case c.Syscall == "ioctl":
		return fmt.Sprintf("ioctl %#x: a rule cannot name the device an ioctl reaches; write one by hand if the device is the VM's", c.Args[1]&0xffffffff)
	case c.Syscall == "socket" && (c.Args[0] != afUnix && c.Args[0] != afInet && c.Args[0] != afInet6 || c.Args[1]&0xf == sockRaw):
		return fmt.Sprintf("socket of family %d, type %d: kfv learns only unix and inet sockets, never raw ones", c.Args[0], c.Args[1]&0xf)
	case slices.Contains(sockCalls, c.Syscall) && c.Family != 0 && c.Family != afUnix && c.Family != afInet && c.Family != afInet6:
		return fmt.Sprintf("address family %d: kfv learns only unix and inet addresses", c.Family)
	case (c.Syscall == "bind" || c.Syscall == "listen") && c.Family != afUnix:
		return "a server on the host's network (" + c.Addr + "): kfv never learns those; the VM's own listeners come from its command line"
	case slices.Contains(sockCalls, c.Syscall) && c.Family == afUnix && !strings.HasPrefix(c.Addr, "/"):
		return "an abstract or unnamed unix socket: kfv learns only socket files in the VM's directories"
	case slices.Contains(sockCalls, c.Syscall) && c.Family == afUnix && !r.inVMDir(c.Addr):
		return "a unix socket outside the VM's directories (" + strings.Join(r.VMDirs, ", ") + ")"
	case c.Path != "":
		for _, p := range strings.Split(c.Path, "\x00") {
			if !r.inVMDir(p) {
				return "a path outside the VM's directories (" + strings.Join(r.VMDirs, ", ") + "): kfv never learns those"
			}
		}
	case slices.Contains(sockCalls, c.Syscall) && c.Family == 0:
		return "a socket call kfv could not tell the address of"
	}
	return ""
}

func (r *Result) inVMDir(p string) bool {
	for _, d := range r.VMDirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// escapeGlob makes a literal path a glob pattern matching only itself.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// admits says, for people, what a call's rule admits.
func (c *Call) admits() string {
	var what string
	switch {
	case c.Access != "":
		what = map[string]string{"O_RDONLY": "opens %s for reading", "O_WRONLY": "opens %s for writing", "O_RDWR": "opens %s for reading and writing"}[c.Access]
		what = fmt.Sprintf(what, c.Path)
	case c.Path != "":
		what = fmt.Sprintf("%s on %s", c.Syscall, strings.ReplaceAll(c.Path, "\x00", " and "))
	case c.Syscall == "socket":
		what = fmt.Sprintf("socket of family %d, type %d", c.Args[0]&0xffff, c.Args[1]&0xf)
	case c.Addr != "":
		what = fmt.Sprintf("%s to %s", c.Syscall, c.Addr)
	default:
		what = c.Syscall
	}
	return what
}

// seen says how often and from where a call was seen.
func (c *Call) seen() string {
	times := "once"
	if c.Count > 1 {
		times = strconv.Itoa(c.Count) + " times"
	}
	if len(c.Threads) == 0 {
		return times
	}
	if len(c.Threads) == 1 {
		return times + " (thread " + c.Threads[0] + ")"
	}
	return times + " (threads " + strings.Join(c.Threads, ", ") + ")"
}

// WriteOverlay writes the overlay for r: extends names the profile it
// stacks on, name the overlay's own name, sources the files learned from.
func WriteOverlay(w io.Writer, r *Result, extends, name string, sources []string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# An overlay learned by kfv-run profile learn from %s.\n", strings.Join(sources, ", "))
	fmt.Fprintf(&b, "# %d denied calls seen, %d distinct: %d written as rules, %d left for you to decide (at the end).\n",
		r.Denials, len(r.Rules)+len(r.Decide), len(r.Rules), len(r.Decide))
	if len(r.VMDirs) > 0 {
		fmt.Fprintf(&b, "# The VM's directories, from the files kfv admitted as the VM's: %s.\n", strings.Join(r.VMDirs, ", "))
	}
	b.WriteString("# Read every rule before you use it: each admits exactly what the run did.\n\n")
	fmt.Fprintf(&b, "extends = %s\n", strconv.Quote(extends))
	fmt.Fprintf(&b, "name = %s\n", strconv.Quote(name))
	fmt.Fprintf(&b, "description = %s\n", strconv.Quote("learned from "+strings.Join(sources, ", ")))
	for i, c := range r.Rules {
		fmt.Fprintf(&b, "\n# Seen %s: %s.\n", c.seen(), c.admits())
		b.WriteString("[[rule]]\n")
		fmt.Fprintf(&b, "name = %s\n", strconv.Quote(fmt.Sprintf("%s-%d", name, i+1)))
		fmt.Fprintf(&b, "syscalls = [%s]\n", strconv.Quote(c.Syscall))
		if c.Path != "" {
			var ps []string
			for _, p := range strings.Split(c.Path, "\x00") {
				ps = append(ps, strconv.Quote(escapeGlob(p)))
			}
			fmt.Fprintf(&b, "paths = [%s]\n", strings.Join(ps, ", "))
		}
		if c.Access != "" {
			idx := 2
			if c.Syscall == "open" {
				idx = 1
			}
			fmt.Fprintf(&b, "args = [{ index = %d, op = \"masked_eq\", mask = \"O_ACCMODE\", value = %q }]\n", idx, c.Access)
		}
		if c.Addr != "" && c.Path == "" {
			addr := c.Addr
			if c.Family == afUnix {
				addr = escapeGlob(addr)
			}
			fmt.Fprintf(&b, "addresses = [%s]\n", strconv.Quote(addr))
		}
		b.WriteString("verdict = \"allow\"\n")
		fmt.Fprintf(&b, "reason = %s\n", strconv.Quote("learned: the VM "+c.admits()))
	}
	if len(r.Decide) > 0 {
		b.WriteString("\n# Left for you to decide: kfv does not learn these (see docs/profiles.md, overlays).\n")
		for _, c := range r.Decide {
			fmt.Fprintf(&b, "#\n# %s, seen %s\n#   %s\n#   arguments %#x\n", c.admits(), c.seen(), c.Why, c.Args)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
