//go:build linux

package supervisor

import (
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The Landlock wall: a second line behind kfv's decisions, enforced by
// the kernel whatever kfv decides. kfv performs every open, connect,
// bind and send to an address QEMU is allowed, from the supervisor,
// outside QEMU's Landlock domain, and installs the result in QEMU; so the
// domain the loader puts QEMU in just before its exec grants almost
// nothing: execute and read of QEMU's binary and ELF interpreter (which
// the kernel opens at exec), no other file or directory access, no TCP
// bind or connect (ABI 4), and no signal or abstract unix socket outside
// the domain (ABI 6; the signal scope also covers SIGIO sent through an
// fcntl owner). A by-path call a rule lets continue in the kernel (mkdir,
// rename, link, symlink, mknod, truncate, rmdir) and anything a rule gets
// wrong then fails in the kernel, as does a signal to a neighbour or to
// kfv. x/sys/unix on the loader's own thread, rather than go-landlock:
// the loader is the thread that execs, and go-landlock restricts every
// thread of the process through libpsx, which a cgo binary (libseccomp)
// would have to link.

// LandlockMode is how hard kfv insists on the wall.
type LandlockMode string

const (
	// LandlockRequired refuses to start QEMU when the kernel cannot
	// build the whole wall (ABI 6 or later: files, TCP and scopes).
	LandlockRequired LandlockMode = "required"
	// LandlockBestEffort builds what the kernel offers and says what it
	// could not: the default.
	LandlockBestEffort LandlockMode = "best-effort"
	// LandlockOff builds nothing.
	LandlockOff LandlockMode = "off"
)

// ParseLandlockMode checks a setting's value; "" is best-effort.
func ParseLandlockMode(s string) (LandlockMode, error) {
	switch m := LandlockMode(s); m {
	case "":
		return LandlockBestEffort, nil
	case LandlockRequired, LandlockBestEffort, LandlockOff:
		return m, nil
	}
	return "", fmt.Errorf("landlock %q: want required, best-effort or off", s)
}

// landlockFullABI is the ABI with everything the wall asks for.
const landlockFullABI = 6

// Filesystem rights by the ABI that introduced them: a ruleset handles
// all a kernel knows, so that none is left unrestricted.
var landlockFSByABI = []uint64{
	1: unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_READ_FILE |
		unix.LANDLOCK_ACCESS_FS_READ_DIR | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR | unix.LANDLOCK_ACCESS_FS_REMOVE_FILE |
		unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_DIR | unix.LANDLOCK_ACCESS_FS_MAKE_REG |
		unix.LANDLOCK_ACCESS_FS_MAKE_SOCK | unix.LANDLOCK_ACCESS_FS_MAKE_FIFO | unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK |
		unix.LANDLOCK_ACCESS_FS_MAKE_SYM,
	2: unix.LANDLOCK_ACCESS_FS_REFER,
	3: unix.LANDLOCK_ACCESS_FS_TRUNCATE,
	5: unix.LANDLOCK_ACCESS_FS_IOCTL_DEV,
}

// landlockNeeds are the parts of the wall later ABIs brought.
var landlockNeeds = []struct {
	abi  int
	what string
}{
	{3, "truncate"},
	{4, "TCP bind and connect"},
	{5, "ioctl on devices QEMU opens"},
	{6, "signals and abstract unix sockets outside QEMU"},
}

// landlockPlan is the wall for one exec of QEMU, worked out by the
// supervisor and built by the loader.
type landlockPlan struct {
	ABI    int    `json:"abi"`
	FS     uint64 `json:"fs"`     // handled filesystem rights
	Net    uint64 `json:"net"`    // handled network rights
	Scoped uint64 `json:"scoped"` // scopes
	// Exec are the files QEMU may execute and read (the binary and its
	// ELF interpreter, as the kernel opens them at exec).
	Exec []string `json:"exec"`
	// Beneath are trees the kernel itself opens files in for QEMU, with
	// the rights QEMU gets there.
	Beneath []landlockTree `json:"beneath,omitempty"`
}

// landlockTree is a directory and the rights QEMU has beneath it.
type landlockTree struct {
	Path   string `json:"path"`
	Access uint64 `json:"access"`
}

// landlockABI asks the kernel which Landlock ABI it offers; 0 when it
// has none (not built, or not enabled at boot).
func landlockABI() int {
	v, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if e != 0 {
		return 0
	}
	return int(v)
}

// planLandlock works out the wall for QEMU at path on a kernel with abi,
// and what it cannot enforce there. It fails when mode is required and
// the kernel falls short, or when QEMU's binary cannot be read.
func planLandlock(mode LandlockMode, abi int, path string) (*landlockPlan, []string, error) {
	if mode == LandlockOff {
		return nil, nil, nil
	}
	var missing []string
	if abi < 1 {
		missing = append(missing, "any of it (the kernel has no Landlock, or it is not enabled at boot)")
	}
	for _, n := range landlockNeeds {
		if abi >= 1 && abi < n.abi {
			missing = append(missing, fmt.Sprintf("%s (ABI %d)", n.what, n.abi))
		}
	}
	if mode == LandlockRequired && abi < landlockFullABI {
		return nil, missing, fmt.Errorf("landlock = required, but the kernel offers Landlock ABI %d: it cannot enforce %s", abi, strings.Join(missing, ", "))
	}
	if abi < 1 {
		return nil, missing, nil
	}
	exec, err := execFiles(path)
	if err != nil {
		return nil, nil, fmt.Errorf("landlock: %w", err)
	}
	p := &landlockPlan{ABI: abi, Exec: exec}
	for v := 1; v <= abi && v < len(landlockFSByABI); v++ {
		p.FS |= landlockFSByABI[v]
	}
	if abi >= 4 {
		p.Net = unix.LANDLOCK_ACCESS_NET_BIND_TCP | unix.LANDLOCK_ACCESS_NET_CONNECT_TCP
	}
	if abi >= 6 {
		p.Scoped = unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | unix.LANDLOCK_SCOPE_SIGNAL
	}
	return p, missing, nil
}

// execFiles returns QEMU's binary and its ELF interpreter, resolved.
func execFiles(path string) ([]string, error) {
	bin, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", path, err)
	}
	files := []string{bin}
	f, err := elf.Open(bin)
	if err != nil {
		return files, nil // a script or an odd binary: the exec decides
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return nil, fmt.Errorf("read %s's interpreter: %w", bin, err)
		}
		interp, err := filepath.EvalSymlinks(strings.TrimRight(string(b), "\x00"))
		if err != nil {
			return nil, fmt.Errorf("resolve %s's interpreter: %w", bin, err)
		}
		files = append(files, interp)
	}
	return files, nil
}

// describe says what the wall enforces, for the lifecycle event.
func (p *landlockPlan) describe(missing []string) string {
	var on []string
	full := uint64(0)
	for v := 1; v <= p.ABI && v < len(landlockFSByABI); v++ {
		full |= landlockFSByABI[v]
	}
	switch {
	case p.FS == full:
		on = append(on, "no file access but executing "+strings.Join(p.Exec, " and "))
		for _, tr := range p.Beneath {
			on[len(on)-1] += " and the kernel's opens under " + tr.Path
		}
	case p.FS != 0:
		on = append(on, fmt.Sprintf("part of the file rights walled (%#x of %#x)", p.FS, full))
	}
	if p.Net != 0 {
		on = append(on, "no TCP bind or connect")
	}
	if p.Scoped != 0 {
		on = append(on, "no signal or abstract unix socket outside QEMU")
	}
	s := fmt.Sprintf("Landlock ABI %d: %s", p.ABI, strings.Join(on, "; "))
	if len(missing) > 0 {
		s += "; not enforced on this kernel: " + strings.Join(missing, ", ")
	}
	return s
}

// restrict builds the wall and puts the calling thread in it: the loader,
// just before it loads the filter and execs QEMU. Landlock needs
// no_new_privs, which the filter needs anyway.
func (p *landlockPlan) restrict() error {
	fd, err := p.ruleset()
	if err != nil {
		return err
	}
	return enforceRuleset(fd)
}

// enforceRuleset puts the calling thread in the ruleset fd and closes
// it. Landlock needs no_new_privs, which the filter needs anyway.
func enforceRuleset(fd int) error {
	defer unix.Close(fd)
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("landlock: %w", os.NewSyscallError("prctl(PR_SET_NO_NEW_PRIVS)", err))
	}
	if _, _, e := unix.Syscall(unix.SYS_LANDLOCK_RESTRICT_SELF, uintptr(fd), 0, 0); e != 0 {
		return fmt.Errorf("landlock: %w", os.NewSyscallError("landlock_restrict_self", e))
	}
	return nil
}

// ruleset builds the wall's ruleset and returns its fd, for
// enforceRuleset. The loader builds it before it drops QEMU's
// credentials (privdrop_linux.go), while it still reaches every file
// the rules name.
func (p *landlockPlan) ruleset() (rfd int, rerr error) {
	attr := unix.LandlockRulesetAttr{Handled_access_fs: p.FS, Handled_access_net: p.Net, Scoped: p.Scoped}
	size := unsafe.Offsetof(attr.Handled_access_net) // ABI 1-3: the filesystem rights alone
	switch {
	case p.Scoped != 0:
		size = unsafe.Offsetof(attr.Quiet_access_fs)
	case p.Net != 0:
		size = unsafe.Offsetof(attr.Scoped)
	}
	fd, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), size, 0)
	if e != 0 {
		return -1, fmt.Errorf("landlock: %w", os.NewSyscallError("landlock_create_ruleset", e))
	}
	defer func() {
		if rerr != nil {
			unix.Close(int(fd))
		}
	}()
	const fileRights = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_READ_FILE
	for _, path := range p.Exec {
		if p.FS&fileRights == 0 {
			break // nothing to grant: neither right is walled
		}
		pfd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("landlock: open %s: %w", path, err)
		}
		rule := unix.LandlockPathBeneathAttr{Allowed_access: fileRights & p.FS, Parent_fd: int32(pfd)}
		_, _, e := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, uintptr(fd), unix.LANDLOCK_RULE_PATH_BENEATH, uintptr(unsafe.Pointer(&rule)), 0, 0, 0)
		unix.Close(pfd)
		if e != 0 {
			return -1, fmt.Errorf("landlock: allow executing %s: %w", path, os.NewSyscallError("landlock_add_rule", e))
		}
	}
	for _, tr := range p.Beneath {
		if tr.Access&p.FS == 0 {
			continue
		}
		pfd, err := unix.Open(tr.Path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("landlock: open %s: %w", tr.Path, err)
		}
		rule := unix.LandlockPathBeneathAttr{Allowed_access: tr.Access & p.FS, Parent_fd: int32(pfd)}
		_, _, e := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, uintptr(fd), unix.LANDLOCK_RULE_PATH_BENEATH, uintptr(unsafe.Pointer(&rule)), 0, 0, 0)
		unix.Close(pfd)
		if e != 0 {
			return -1, fmt.Errorf("landlock: allow %s: %w", tr.Path, os.NewSyscallError("landlock_add_rule", e))
		}
	}
	return int(fd), nil
}

// LandlockSummary says what QEMU's Landlock wall enforces on this
// kernel, for kfv-run version.
func LandlockSummary() string {
	abi := landlockABI()
	if abi < 1 {
		return "Landlock: none (the kernel has no Landlock, or it is not enabled at boot): landlock = required refuses to start"
	}
	p := &landlockPlan{ABI: abi, Exec: []string{"QEMU's binary", "its ELF interpreter"}}
	if abi >= 4 {
		p.Net = 1
	}
	if abi >= 6 {
		p.Scoped = 1
	}
	var missing []string
	for _, n := range landlockNeeds {
		if abi < n.abi {
			missing = append(missing, fmt.Sprintf("%s (ABI %d)", n.what, n.abi))
		}
	}
	s := p.describe(missing)
	if abi < landlockFullABI {
		s += "; landlock = required refuses to start"
	}
	return s
}
