package guest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Workloads driven from the host: the test acts on QEMU (reset, QMP)
// while the guest runs, and the guest reports what it saw.
const (
	// WorkloadReboot reboots once: the first boot writes a marker to
	// the first sector of /dev/vda and reboots, the second finds it and
	// finishes with boot=2. Needs DiskArgs and RebootArgs.
	WorkloadReboot = "reboot"
	// WorkloadCounter prints "KFV-COUNT n=N" every 0.2 s, kfv.count
	// times (default 600): savevm/loadvm and migration tests read where
	// the count goes back or goes on (Counts).
	WorkloadCounter = "counter"
	// WorkloadHotplug waits for a NIC to appear, prints
	// "KFV-HOTPLUG added=ethN mac=M", then waits for it to go and prints
	// "KFV-HOTPLUG removed=ethN". Needs HotplugArgs.
	WorkloadHotplug = "hotplug"
	// WorkloadCDROM reads /dev/sr0 (CDROMArgs), prints
	// "KFV-CDROM first=SUM", then waits for the medium to change and
	// reports sha256= of the new medium's first kfv.size MiB (default 1).
	WorkloadCDROM = "cdrom"
	// WorkloadReact sends the test implant one command (kfv.payload,
	// kfv.arg) through /dev/vda, at most once per disk, and reports what
	// it sees of kfv's reaction on "KFV-REACT" lines: eth0's carrier and
	// presence, transfers to the host (kfv.port), the count (kfv.at), and
	// after a relaunch the sha256 of the pattern it wrote before the
	// command. Needs DiskArgs with a raw image of at least 2 MiB; see
	// init.sh for the options.
	WorkloadReact = "react"
	// ReactMark opens the first sector of a disk the react workload has
	// sent its command from.
	ReactMark = "KFV-REACT-MARK"
	// WorkloadShare mounts the 9p share tagged ShareTag (virtio-9p),
	// reports in= the sha256 of its file "in" and writes kfv.size MiB of
	// the pattern (default 4; 0 writes nothing) to its file "out". A
	// writable share also gets ShareTree.
	WorkloadShare = "share"
	// WorkloadTopology reports cpus=, nodes= (NUMA) and mem_kb= as the
	// guest sees them.
	WorkloadTopology = "topology"
	// WorkloadRNG reads 4 KiB from /dev/hwrng, which must be virtio-rng's,
	// and reports rng= and distinct= (how many byte values came out).
	WorkloadRNG = "rng"
)

// ShareTag is the mount tag the share workload mounts.
const ShareTag = "kfvshare"

// ShareTree is the directory the share workload leaves in a writable
// share: it makes kfvdir, writes kfvdir/a and renames it to b, links b
// to hard and soft (a symlink to "b"), chowns b to ShareTreeOwner,
// chmods it to ShareTreeMode and sets its times to ShareTreeTime,
// removes hard, makes and removes a directory and a file, and renames
// kfvdir to tree. b then holds ShareTreeData.
const (
	ShareTree      = "tree"
	ShareTreeData  = "kfv 9p tree\n"
	ShareTreeOwner = 1234
	ShareTreeMode  = 0o640
	ShareTreeTime  = "2001-02-03T04:05:06Z"
)

// RebootArgs returns args without -no-reboot, so that a guest reboot
// resets the machine instead of ending QEMU.
func RebootArgs(args []string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		if a != "-no-reboot" {
			out = append(out, a)
		}
	}
	return out
}

// HotplugPort is the id of the PCIe root port HotplugArgs adds: on q35,
// devices are hot-plugged into a root port, not into the root complex.
const HotplugPort = "kfvport1"

// HotplugArgs adds an empty PCIe root port (HotplugPort) for device_add.
func HotplugArgs() []string {
	return []string{"-device", "pcie-root-port,id=" + HotplugPort + ",bus=pcie.0,chassis=1,slot=1"}
}

// CDROMDevice is the qdev id of the drive CDROMArgs adds, for
// blockdev-change-medium's id argument.
const CDROMDevice = "kfvcd"

// CDROMModules are the guest drivers the cdrom workload needs on q35's
// AHCI controller (with their dependencies: libahci, libata, scsi_mod,
// cdrom). Debian 12's kernel builds them as modules (CONFIG_SATA_AHCI=m,
// CONFIG_BLK_DEV_SR=m), so LinuxModules must list them.
var CDROMModules = []string{"ahci", "sr_mod"}

// CDROMArgs adds an empty ide-cd drive on the first port of q35's AHCI
// controller; the guest sees it as /dev/sr0.
func CDROMArgs() []string {
	return []string{"-device", "ide-cd,id=" + CDROMDevice + ",bus=ide.0"}
}

// WritePattern writes the data init.sh's "pattern N" produces: N MiB,
// each MiB its index as 16 decimal digits followed by a repeated text
// line, so misplaced blocks change the checksum.
func WritePattern(w io.Writer, mib int) error {
	block := []byte(strings.Repeat("kfv-pattern-0123456789abcdef\n", 1048560/29+1)[:1048560])
	for i := 0; i < mib; i++ {
		if _, err := fmt.Fprintf(w, "%016d", i); err != nil {
			return fmt.Errorf("write pattern: %w", err)
		}
		if _, err := w.Write(block); err != nil {
			return fmt.Errorf("write pattern: %w", err)
		}
	}
	return nil
}

// PatternSHA256 is the hex sha256 of WritePattern's mib MiB.
func PatternSHA256(mib int) string {
	h := sha256.New()
	// A hash never fails to write.
	if err := WritePattern(h, mib); err != nil {
		panic(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Lines returns the console lines that contain marker (e.g.
// "KFV-BOOTED "), from marker on, in order. ParseMarkers keeps one of
// each; a guest that reboots or counts prints several.
func Lines(out []byte, marker string) []string {
	var got []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if i := strings.Index(line, marker); i >= 0 {
			got = append(got, line[i:])
		}
	}
	return got
}

// Counts returns the values of the counter workload's "KFV-COUNT n=N"
// lines, in the order printed. A line cut short (the console caught
// mid-write) is skipped.
func Counts(out []byte) []int {
	var ns []int
	for _, l := range Lines(out, "KFV-COUNT n=") {
		n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(l, "KFV-COUNT n=")))
		if err == nil {
			ns = append(ns, n)
		}
	}
	return ns
}

// Fields parses the key=value words of a marker line such as
// "KFV-HOTPLUG added=eth0 mac=52:54:00:00:00:01".
func Fields(line string) map[string]string {
	return fields(line)
}

// MissingModules returns the names (as in LinuxModules) that l's
// initramfs does not load and its kernel does not build in.
func (l *Linux) MissingModules(names ...string) []string {
	have := map[string]bool{}
	for _, m := range l.Modules {
		have[modName(m)] = true
	}
	for _, m := range l.Builtin {
		have[modName(m)] = true
	}
	var missing []string
	for _, n := range names {
		if !have[modName(n)] {
			missing = append(missing, n)
		}
	}
	return missing
}
