//go:build linux

package seccompnotify

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"kfv/orch"
	"kfv/sysent"
)

// TUNSETIFF names the interface a tun fd attaches to, or creates, in a
// struct ifreq in QEMU's memory. kfv reads the struct once (the decoder),
// decides on its name (rule vm-tap-setiff: the VM's own taps), and
// performs the ioctl itself on its copy of QEMU's fd with the bytes it
// read, then writes back what the kernel wrote (the name "tap%d" became),
// so another thread rewriting the name after the check changes nothing.
// Every other ioctl that reaches kfv continues as decided.

func init() {
	register(sysent.PerformIoctl, performer{perform: performIoctl})
}

// tunSetIff is TUNSETIFF, _IOW('T', 202, int); sizeofIfreq is struct
// ifreq's size on x86_64, ifNameSize IFNAMSIZ.
const (
	tunSetIff   = 0x400454ca
	sizeofIfreq = 40
	ifNameSize  = 16
)

// capNetAdmin is CAP_NET_ADMIN's bit in a capability set.
const capNetAdmin = 12

// decodeIfreq reads TUNSETIFF's struct ifreq into r.Ifreq and its name
// into r.Ifname.
func decodeIfreq(n *Notif, r *orch.Request) error {
	buf := make([]byte, sizeofIfreq)
	if err := ReadMem(n.PID, n.Args[2], buf); err != nil {
		return fmt.Errorf("read struct ifreq: %w", err)
	}
	name := buf[:ifNameSize]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	r.Ifreq, r.Ifname = buf, string(name)
	return nil
}

func performIoctl(g *Gate, c *Call, _ orch.Decision, _ *Target, _ error) result {
	req := &c.Req
	if uint32(req.Args[1]) != tunSetIff {
		return decided("")
	}
	if len(req.Ifreq) != sizeofIfreq {
		return refused("kfv:tunsetiff", "the struct ifreq was not read", true)
	}
	// kfv may hold CAP_NET_ADMIN where QEMU does not (-runas, an
	// unprivileged manager): the call must not do more than QEMU could,
	// unless kfv took root from QEMU itself, the decision having kept
	// the call to the VM's own taps by name.
	if ok, why := callerMaySetIff(req.TID, req.Ifname); !ok && !g.DroppedRoot {
		return failed(unix.EPERM, "emulated: "+why)
	}
	fd, bad := takeSocket(g, c)
	if bad != nil {
		return *bad
	}
	defer fd.Close()
	ifr := bytes.Clone(req.Ifreq)
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), tunSetIff, uintptr(unsafe.Pointer(&ifr[0])))
	runtime.KeepAlive(ifr)
	if e != 0 {
		return failed(e, "emulated")
	}
	// The kernel writes the name it gave back into the struct (tap%d
	// becomes tapN): QEMU reads it from there.
	if err := WriteMem(c.N.PID, req.Args[2], ifr[:ifNameSize]); err != nil {
		return failed(unix.EFAULT, "emulated: write struct ifreq back: "+err.Error())
	}
	name := ifr[:ifNameSize]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return returns(0, 0, "emulated: attached to "+strconv.Quote(string(name)))
}

// callerMaySetIff says whether the kernel would let thread tid make
// TUNSETIFF for name itself, as far as kfv's performing it with its own
// credentials could differ: a caller with CAP_NET_ADMIN may do anything
// kfv may; one without may only attach to an existing tun device whose
// owner is its effective uid or whose group is one of its groups (the
// kernel's tun_not_capable), and never create one.
func callerMaySetIff(tid int, name string) (bool, string) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return false, "read the caller's credentials: " + err.Error()
	}
	var euid, egid string
	var groups []string
	var capEff uint64
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		switch k {
		case "Uid":
			if len(f) == 4 {
				euid = f[1]
			}
		case "Gid":
			if len(f) == 4 {
				egid = f[1]
			}
		case "Groups":
			groups = f
		case "CapEff":
			if len(f) == 1 {
				capEff, _ = strconv.ParseUint(f[0], 16, 64)
			}
		}
	}
	if capEff&(1<<capNetAdmin) != 0 {
		return true, ""
	}
	if strings.ContainsAny(name, "/%") || name == "" || name == "." || name == ".." {
		return false, "the caller lacks CAP_NET_ADMIN to create an interface"
	}
	read := func(attr string) string {
		v, _ := os.ReadFile("/sys/class/net/" + name + "/" + attr)
		return strings.TrimSpace(string(v))
	}
	owner, group := read("owner"), read("group")
	switch {
	case owner == "" && group == "":
		return false, "no tun device " + strconv.Quote(name) + " to attach to, and the caller lacks CAP_NET_ADMIN to create one"
	case owner != "-1" && owner == euid:
		return true, ""
	case group != "-1" && (group == egid || slices.Contains(groups, group)):
		return true, ""
	}
	return false, "the caller lacks CAP_NET_ADMIN and is neither the owner nor in the group of " + strconv.Quote(name)
}
