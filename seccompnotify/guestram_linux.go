//go:build linux

package seccompnotify

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"kfv/memwatch"
)

// Guest RAM: which anonymous memory of QEMU may back a KVM memory slot.
//
// Anonymous memory is all alike in /proc/PID/maps: guest RAM, malloc's
// arenas, thread stacks and the .bss of QEMU and its libraries (function
// tables, secrets) all show without a name. What sets guest RAM apart is
// what QEMU does when it makes a RAM block (ram_block_add, QEMU 7.2 and
// 10.0): it marks the whole block MADV_DONTFORK, which smaps shows as the
// VmFlag "dc"; nothing else of QEMU's carries it. A compromised QEMU could
// mark its heap too (madvise is allowed in the kernel), so the set is read
// while QEMU can still be trusted: before the guest has run, when every
// RAM block of the command line exists (ROMs and video memory included,
// whose slots the guest's firmware maps later) and no guest code has
// touched QEMU. From then on a slot over anonymous memory is guest RAM
// only inside that set; elsewhere its backing reads "anon:host" and no
// rule for "anon" matches it.

// AnonHost is the backing of anonymous memory outside the VM's guest RAM
// once the guest RAM is sealed.
const AnonHost = "anon:host"

// guestRAM is the sealed set of one QEMU process.
type guestRAM struct {
	pid    int
	ranges [][2]uint64 // [start, end) of each guest RAM block
	// announced is the size of the memory backends the VM's manager
	// added over the monitor since (object-add): RAM blocks made after
	// the seal, which a later slot may find, up to that many bytes.
	announced uint64
}

// SealGuestRAM reads QEMU's RAM blocks (process pid's anonymous mappings
// marked MADV_DONTFORK) and from now on admits anonymous KVM memory slots
// only inside them. Call it just before the guest first runs; a later
// call for another process (a restarted QEMU) replaces the set, and until
// a process's set is sealed its slots are decided as before (the guest
// has not run). It returns how many blocks and bytes it found.
func (d *Decoder) SealGuestRAM(pid int) (blocks int, bytes uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps")
	if err != nil {
		return 0, 0, fmt.Errorf("read smaps: %w", err)
	}
	ranges, err := dontforkAnon(b)
	if err != nil {
		return 0, 0, err
	}
	for _, r := range ranges {
		bytes += r[1] - r[0]
	}
	d.ramMu.Lock()
	defer d.ramMu.Unlock()
	d.ram.Store(&guestRAM{pid: pid, ranges: ranges})
	return len(ranges), bytes, nil
}

// AnnounceGuestRAM says the VM's manager added a memory backend of size
// bytes (object-add memory-backend-*, seen by kfv's monitor proxy before
// QEMU): its RAM block, made after the seal, joins the guest RAM when a
// slot first needs it, if it is a new block of QEMU's (MADV_DONTFORK,
// not sealed yet) and within the bytes announced.
func (d *Decoder) AnnounceGuestRAM(size uint64) {
	d.ramMu.Lock()
	defer d.ramMu.Unlock()
	if g := d.ram.Load(); g != nil {
		c := *g
		c.announced += size
		d.ram.Store(&c)
	}
}

// GuestRAMSealed reports whether the guest RAM of process pid is sealed.
func (d *Decoder) GuestRAMSealed(pid int) bool {
	g := d.ram.Load()
	return g != nil && g.pid == pid
}

// slotBacking refines the backing of a KVM memory slot over [addr,
// addr+size) of process pid: anonymous memory outside a sealed guest RAM
// is AnonHost.
func (d *Decoder) slotBacking(pid int, backing string, addr, size uint64) string {
	if backing != "anon" {
		return backing
	}
	g := d.ram.Load()
	if g == nil || g.pid != pid {
		return backing
	}
	if g.inside(addr, size) {
		return backing
	}
	if g.announced > 0 && d.takeAnnounced(pid, addr, size) {
		return backing
	}
	return AnonHost
}

func (g *guestRAM) inside(addr, size uint64) bool {
	end := addr + size
	for _, r := range g.ranges {
		if addr >= r[0] && end <= r[1] && end > addr {
			return true
		}
	}
	return false
}

// takeAnnounced reads QEMU's RAM blocks again and adds those made since
// the seal, largest first, as long as the bytes announced cover them; it
// reports whether the slot then lies in guest RAM.
func (d *Decoder) takeAnnounced(pid int, addr, size uint64) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps")
	if err != nil {
		return false
	}
	now, err := dontforkAnon(b)
	if err != nil {
		return false
	}
	d.ramMu.Lock()
	defer d.ramMu.Unlock()
	g := d.ram.Load()
	if g == nil || g.pid != pid {
		return false
	}
	c := *g
	c.ranges = slices.Clone(g.ranges)
	for _, r := range now {
		n := r[1] - r[0]
		if n > c.announced || c.inside(r[0], n) {
			continue
		}
		c.ranges = append(c.ranges, r)
		c.announced -= n
	}
	d.ram.Store(&c)
	return c.inside(addr, size)
}

// dontforkAnon parses smaps and returns the anonymous mappings whose
// VmFlags hold "dc", merged where they touch.
func dontforkAnon(b []byte) ([][2]uint64, error) {
	var out [][2]uint64
	var cur *memwatch.Mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok {
			if cur != nil && cur.Backing() == "anon" && hasFlag(rest, "dc") {
				if n := len(out); n > 0 && out[n-1][1] == cur.Start {
					out[n-1][1] = cur.End
				} else {
					out = append(out, [2]uint64{cur.Start, cur.End})
				}
			}
			cur = nil
			continue
		}
		if f := strings.Fields(line); len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			ms, err := memwatch.ParseMaps([]byte(line + "\n"))
			if err != nil {
				return nil, fmt.Errorf("parse smaps: %w", err)
			}
			if len(ms) == 1 {
				cur = &ms[0]
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read smaps: %w", err)
	}
	return out, nil
}

func hasFlag(flags, f string) bool {
	for _, x := range strings.Fields(flags) {
		if x == f {
			return true
		}
	}
	return false
}
