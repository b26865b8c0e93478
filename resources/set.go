package resources

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Access is how QEMU may open a file, directory tree or device. The
// values are ordered: each allows what the ones before it allow.
type Access int

const (
	// ReadOnly allows opening for reading.
	ReadOnly Access = iota + 1
	// ReadWrite allows opening for reading and writing (not creating).
	ReadWrite
	// Create allows opening for writing and creating the file, as for
	// -pidfile, a chardev log or a snapshot overlay.
	Create
)

var accessNames = map[Access]string{ReadOnly: "read-only", ReadWrite: "read-write", Create: "create"}

func (a Access) String() string {
	if s, ok := accessNames[a]; ok {
		return s
	}
	return fmt.Sprintf("Access(%d)", int(a))
}

// MarshalText implements encoding.TextMarshaler.MarshalText.
func (a Access) MarshalText() ([]byte, error) {
	s, ok := accessNames[a]
	if !ok {
		return nil, fmt.Errorf("marshal access: unknown value %d", int(a))
	}
	return []byte(s), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.UnmarshalText.
func (a *Access) UnmarshalText(b []byte) error {
	for k, v := range accessNames {
		if v == string(b) {
			*a = k
			return nil
		}
	}
	return fmt.Errorf("unmarshal access: unknown value %q", b)
}

// File is a file QEMU may open.
type File struct {
	// Path is the name as the command line (or an image header) gives it.
	Path string `json:"path"`
	// Abs is the absolute, cleaned path. It is a glob (see Pattern) for
	// files whose name QEMU makes up, and empty for DataDir files that
	// are not in QEMU's working directory.
	Abs    string `json:"abs,omitempty"`
	Access Access `json:"access"`
	// Option is where the file came from, e.g. "-drive file= (id=disk0)".
	Option string `json:"option"`
	// Pattern says Abs is a glob: QEMU picks the name at run time
	// (snapshot overlays are /var/tmp/vl.XXXXXX).
	Pattern bool `json:"pattern,omitempty"`
	// DataDir says QEMU looks the name up in its data directories (-L and
	// the built-in ones) when it is not readable from its working
	// directory (-bios, -option-rom, romfile=).
	DataDir bool `json:"datadir,omitempty"`
	// Image says the file is a block node's (a disk image, a backing or
	// data file, a snapshot overlay, an image QEMU creates): QEMU's
	// file-posix driver probes it with file-attribute ioctls.
	Image bool `json:"image,omitempty"`
	// Memory says the file backs guest RAM (memory-backend-file
	// mem-path=, -mem-path): QEMU maps it and hands the mapping to KVM
	// as a memory slot.
	Memory bool `json:"memory,omitempty"`
}

// Dir is a directory tree QEMU may use.
type Dir struct {
	Path   string `json:"path"`
	Abs    string `json:"abs"`
	Access Access `json:"access"`
	Option string `json:"option"`
	// Share says QEMU exports the tree to the guest (9p): it works in it
	// for the guest, creating and removing files and directories when
	// the share is writable, and asks its files for their inode
	// generation (FS_IOC_GETVERSION).
	Share bool `json:"share,omitempty"`
	// Memory says QEMU creates the files backing guest RAM in the
	// directory (memory-backend-file or -mem-path naming a directory,
	// usually a hugetlbfs mount): it names each qemu_back_mem.ID.XXXXXX,
	// unlinks it at once, maps it and hands the mapping to KVM as a
	// memory slot.
	Memory bool `json:"memory,omitempty"`
}

// Socket families.
const (
	FamilyUnix  = "unix"
	FamilyInet  = "inet"
	FamilyInet6 = "inet6"
	FamilyVsock = "vsock"
)

// Socket operations.
const (
	// OpConnect: QEMU connects (or, for datagrams, sends) to Address.
	OpConnect = "connect"
	// OpBind: QEMU binds Address (and listens on it, for streams).
	OpBind = "bind"
)

// Socket types.
const (
	Stream = "stream"
	Dgram  = "dgram"
)

// Socket is an address QEMU may connect to or bind.
type Socket struct {
	// Family is FamilyUnix, FamilyInet, FamilyInet6 or FamilyVsock.
	// FamilyInet also stands for a host name, which may resolve to
	// either family, and for a wildcard address.
	Family string `json:"family"`
	// Type is Stream or Dgram.
	Type string `json:"type"`
	// Address is a unix path (absolute; "@name" for the abstract
	// namespace), "host:port" ("[v6]:port"; an empty host is every
	// address, a port range is "lo-hi"), or "cid:port" for vsock.
	Address string `json:"address"`
	// Op is OpConnect or OpBind.
	Op     string `json:"op"`
	Option string `json:"option"`
}

// Device is a device node (or a hugetlbfs mount) QEMU needs.
type Device struct {
	// Path is the node; a glob when Pattern is set (/dev/vfio/*).
	Path    string `json:"path"`
	Access  Access `json:"access"`
	Option  string `json:"option"`
	Pattern bool   `json:"pattern,omitempty"`
}

// FD is an inherited file descriptor QEMU is told to use: the supervisor
// checks that it exists before QEMU starts.
type FD struct {
	Num    int    `json:"fd"`
	Option string `json:"option"`
}

// Set is a VM's resource set, derived from QEMU's command line.
type Set struct {
	// Name is the VM name from -name, empty when there is none.
	Name    string   `json:"name,omitempty"`
	Files   []File   `json:"files"`
	Dirs    []Dir    `json:"dirs"`
	Sockets []Socket `json:"sockets"`
	Devices []Device `json:"devices"`
	// NetUser is set when user-mode networking (slirp) may connect on the
	// guest's behalf: a user netdev without restrict=on, or QEMU's
	// default network (no -nic, -net or -netdev, and no -nodefaults).
	// Its forwards (hostfwd, guestfwd) are in Sockets.
	NetUser bool `json:"netuser"`
	// TapNames are the interface names QEMU gives TUNSETIFF for the taps
	// it opens itself (-netdev tap without fd=, fds= or helper=; every
	// queue of a multiqueue tap gives the same name): ifname= cut to
	// IFNAMSIZ-1 bytes as QEMU cuts it, or the kernel's template "tap%d"
	// (the next free tapN) for a tap without ifname=.
	TapNames []string `json:"tap_names,omitempty"`
	// FDs are the inherited fds named by fd=, fds=, vhostfd=, sock_fd=,
	// -add-fd and -incoming fd:.
	FDs []FD `json:"fds"`
	// Accels are the accelerators QEMU may try, in order.
	Accels []string `json:"accels"`
	// MaxVCPUs bounds the vCPUs the VM can have, hot-plugged ones
	// included (-smp; 1 without it): KVM_CREATE_VCPU beyond it is not
	// QEMU's.
	MaxVCPUs int `json:"max_vcpus"`
	// VCPUs are the vCPUs the VM starts with: -smp's cpus and the CPUs
	// -device adds. Hot-plug over the monitor may add up to MaxVCPUs.
	VCPUs int `json:"vcpus"`
	// IOUring is set when a block backend uses aio=io_uring: only then
	// does QEMU need io_uring_setup.
	IOUring bool `json:"io_uring,omitempty"`
	// LoadVM is the snapshot -loadvm restores; it is written into the
	// VM's disks, which must be read-write.
	LoadVM string `json:"loadvm,omitempty"`
	// Daemonize is set by -daemonize: QEMU forks to become a daemon
	// (twice: the child calls setsid and forks the daemon), and only then
	// may it create processes at all. Its -pidfile is in Files.
	Daemonize bool `json:"daemonize,omitempty"`
	// RunAs is the user QEMU changes to once it is set up (-runas, or
	// -run-with user=): a name, or UID:GID.
	RunAs string `json:"runas,omitempty"`
	// Warnings name options that may use resources the set does not
	// describe (exec'd scripts, network block protocols, values that
	// look like paths in options kfv does not understand).
	Warnings []string `json:"warnings"`
}

// appendNew appends each of vs that s does not hold yet.
func appendNew[T comparable](s []T, vs ...T) []T {
	for _, v := range vs {
		if !slices.Contains(s, v) {
			s = append(s, v)
		}
	}
	return s
}

// Merge adds to s what other holds that s does not: its files, directory
// trees, sockets, devices, inherited fds and warnings, and its use of
// user-mode networking and io_uring. What other says about a whole VM
// (Name, Accels, LoadVM) is left out: merging the resources a monitor
// command names into a VM's set does not rename the VM or change its
// accelerators.
func (s *Set) Merge(other *Set) {
	s.Files = appendNew(s.Files, other.Files...)
	s.Dirs = appendNew(s.Dirs, other.Dirs...)
	s.Sockets = appendNew(s.Sockets, other.Sockets...)
	s.Devices = appendNew(s.Devices, other.Devices...)
	s.FDs = appendNew(s.FDs, other.FDs...)
	s.TapNames = appendNew(s.TapNames, other.TapNames...)
	s.Warnings = appendNew(s.Warnings, other.Warnings...)
	s.NetUser = s.NetUser || other.NetUser
	s.IOUring = s.IOUring || other.IOUring
}

func (s *Set) addFile(f File) { s.Files = appendNew(s.Files, f) }

func (s *Set) addDir(d Dir) { s.Dirs = appendNew(s.Dirs, d) }

func (s *Set) addSocket(k Socket) {
	if k.Family == FamilyUnix && (k.Address == "" || k.Address == "@") {
		s.warnf("%s: empty unix socket path (QEMU will refuse it)", k.Option)
		return
	}
	s.Sockets = appendNew(s.Sockets, k)
}

// addInet adds an inet socket at host:port; an IPv6 literal host makes
// it FamilyInet6, bracketed in the address.
func (s *Set) addInet(host, port, typ, op, option string) {
	s.addSocket(Socket{Family: inetFamily(host), Type: typ, Address: joinHostPort(host, port), Op: op, Option: option})
}

// addUnix adds a unix socket at addr (absolute, or "@name").
func (s *Set) addUnix(addr, typ, op, option string) {
	s.addSocket(Socket{Family: FamilyUnix, Type: typ, Address: addr, Op: op, Option: option})
}

// addVsock adds a vsock socket at cid:port.
func (s *Set) addVsock(cid, port, typ, op, option string) {
	s.addSocket(Socket{Family: FamilyVsock, Type: typ, Address: cid + ":" + port, Op: op, Option: option})
}

func (s *Set) addDevice(d Device) { s.Devices = appendNew(s.Devices, d) }

func (s *Set) addFD(n int, option string) { s.FDs = appendNew(s.FDs, FD{Num: n, Option: option}) }

func (s *Set) warnf(format string, a ...any) {
	s.Warnings = appendNew(s.Warnings, fmt.Sprintf(format, a...))
}

// FileAccess returns the widest access the set gives the absolute path
// abs as a file (Pattern and DataDir entries are not matched), and
// whether it names abs at all.
func (s *Set) FileAccess(abs string) (Access, bool) {
	var best Access
	for _, f := range s.Files {
		if f.Abs == abs && !f.Pattern && f.Access > best {
			best = f.Access
		}
	}
	return best, best != 0
}

// JSON returns the set as indented JSON. Empty lists are [] rather than
// null, so consumers need no special case. File names that are not valid
// UTF-8 come out with U+FFFD in place of the bad bytes: JSON has no way
// to carry them, so such a name cannot be matched from the JSON form.
func (s *Set) JSON() ([]byte, error) {
	c := *s
	c.Files = nonNil(c.Files)
	c.Dirs = nonNil(c.Dirs)
	c.Sockets = nonNil(c.Sockets)
	c.Devices = nonNil(c.Devices)
	c.FDs = nonNil(c.FDs)
	c.Accels = nonNil(c.Accels)
	c.Warnings = nonNil(c.Warnings)
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("marshal resource set: %w", err)
	}
	return b, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// String renders the set as tables for people.
func (s *Set) String() string {
	var b strings.Builder
	name := s.Name
	if name == "" {
		name = "(no -name)"
	}
	fmt.Fprintf(&b, "VM: %s\n", name)
	fmt.Fprintf(&b, "Accelerators: %s\n", strings.Join(s.Accels, ", "))
	fmt.Fprintf(&b, "vCPUs: %d, at most %d\n", s.VCPUs, s.MaxVCPUs)
	netuser := "no"
	if s.NetUser {
		netuser = "yes (slirp connects wherever the guest connects)"
	}
	fmt.Fprintf(&b, "User-mode networking: %s\n", netuser)
	if s.RunAs != "" {
		fmt.Fprintf(&b, "Runs as: %s (once set up)\n", s.RunAs)
	}
	if s.Daemonize {
		b.WriteString("Daemonize: yes (QEMU's two daemonizing forks are admitted, nothing else)\n")
	}
	if s.IOUring {
		b.WriteString("io_uring: yes (aio=io_uring)\n")
	}
	if s.LoadVM != "" {
		fmt.Fprintf(&b, "Loads snapshot: %s\n", s.LoadVM)
	}

	var rows [][]string
	for _, f := range s.Files {
		p := f.Abs
		switch {
		case f.DataDir && p == "":
			p = f.Path + " (QEMU data dirs)"
		case f.Pattern:
			p += " (pattern)"
		}
		rows = append(rows, []string{f.Access.String(), p, f.Option})
	}
	table(&b, "Files", []string{"ACCESS", "PATH", "FROM"}, rows)

	rows = rows[:0]
	for _, d := range s.Dirs {
		rows = append(rows, []string{d.Access.String(), d.Abs, d.Option})
	}
	table(&b, "Directory trees", []string{"ACCESS", "PATH", "FROM"}, rows)

	rows = rows[:0]
	for _, k := range s.Sockets {
		rows = append(rows, []string{k.Op, k.Family + "/" + k.Type, k.Address, k.Option})
	}
	table(&b, "Sockets", []string{"OP", "FAMILY", "ADDRESS", "FROM"}, rows)

	rows = rows[:0]
	for _, d := range s.Devices {
		p := d.Path
		if d.Pattern {
			p += " (pattern)"
		}
		rows = append(rows, []string{d.Access.String(), p, d.Option})
	}
	table(&b, "Devices", []string{"ACCESS", "PATH", "FROM"}, rows)

	rows = rows[:0]
	for _, f := range s.FDs {
		rows = append(rows, []string{fmt.Sprint(f.Num), f.Option})
	}
	table(&b, "Inherited fds", []string{"FD", "FROM"}, rows)

	if len(s.Warnings) > 0 {
		b.WriteString("\nWarnings:\n")
		for _, w := range s.Warnings {
			fmt.Fprintf(&b, "  %s\n", w)
		}
	}
	return b.String()
}

// table writes a titled table with left-aligned columns, or "(none)".
func table(b *strings.Builder, title string, head []string, rows [][]string) {
	fmt.Fprintf(b, "\n%s:\n", title)
	if len(rows) == 0 {
		b.WriteString("  (none)\n")
		return
	}
	width := make([]int, len(head))
	for _, r := range append([][]string{head}, rows...) {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	for _, r := range append([][]string{head}, rows...) {
		b.WriteString(" ")
		for i, c := range r {
			if i == len(r)-1 {
				fmt.Fprintf(b, " %s", c)
			} else {
				fmt.Fprintf(b, " %-*s", width[i], c)
			}
		}
		b.WriteString("\n")
	}
}
