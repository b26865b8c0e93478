package policy

import (
	"os"
	"path/filepath"
	"strings"

	"kfv/profiles"
)

// relocatedDirs are the directories QEMU looks up through its bundle
// (util/cutils.c get_relocated_path) as Debian configures them (QEMU 7.2
// and 10.0): the data directory, the firmware path
// (--firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu),
// the module directory and the configuration directory.
var relocatedDirs = []string{
	"/usr/share/qemu",
	"/usr/share/seabios",
	"/usr/lib/ipxe/qemu",
	"/usr/lib/x86_64-linux-gnu/qemu",
	"/etc/qemu",
}

// moduleDir is where QEMU's modules (hw-display-virtio-gpu.so, ...) are.
const moduleDir = "/usr/lib/x86_64-linux-gnu/qemu"

// QEMUBundle returns the bundle of a QEMU binary, "" when it has none.
// QEMU built without relocation support (Debian's) finds its data,
// firmware and modules at their absolute paths, unless a file or link
// named qemu-bundle is beside the binary (found from /proc/self/exe, so
// links to the binary resolved): then each such path P is looked up as
// BUNDLE/P first. A QEMU unpacked outside the system's paths runs so.
// The bundle is returned with its links resolved; "" when it does not
// resolve to a directory.
func QEMUBundle(binary string) string {
	if binary == "" {
		return ""
	}
	if !strings.Contains(binary, "/") {
		return "" // a name found in PATH: the caller resolves it
	}
	exe, err := filepath.EvalSymlinks(binary)
	if err != nil {
		return ""
	}
	b, err := filepath.EvalSymlinks(filepath.Join(filepath.Dir(exe), "qemu-bundle"))
	if err != nil {
		return ""
	}
	if st, err := os.Stat(b); err != nil || !st.IsDir() {
		return ""
	}
	return b
}

// WithBundleRules returns a copy of p with the rules for the QEMU
// installation under bundle (QEMUBundle of the binary kfv launches),
// placed before the profile's own, or p itself when bundle is "". They
// admit of that installation what the profile's qemu-data and
// exec-libraries rules admit of the system's: its data, firmware, option
// ROMs, keymaps and configuration, opened read-only, and its modules
// mapped executable, never writable at once. Only the directories QEMU
// looks up through its bundle are admitted, and only for the QEMU that
// has this bundle: the installation is QEMU's own, like /usr/share/qemu,
// and comes from the command line's program, as the command line's disks
// come from its options.
func WithBundleRules(p *profiles.Profile, bundle string) *profiles.Profile {
	if bundle == "" {
		return p
	}
	var trees []string
	for _, d := range relocatedDirs {
		trees = append(trees, escapeGlob(bundle+d)+"/**")
	}
	q := *p
	q.Rules = append([]profiles.VerdictRule{
		{
			Name:     "qemu-bundle-data",
			Syscalls: []string{"openat"},
			Paths:    trees,
			Args:     []profiles.ArgCond{{Index: 2, Op: profiles.OpMaskedEq, Mask: oAccmode | oCreat | oTrunc, Values: []uint64{0}}},
			Verdict:  profiles.VerdictAllow,
			Reason:   "the data, firmware, option ROMs, keymaps, configuration and modules of the QEMU kfv launched, which it looks up under its qemu-bundle (" + bundle + "): read-only",
		},
		{
			Name:     "qemu-bundle-modules",
			Syscalls: []string{"mmap"},
			Backing:  []string{escapeGlob(bundle+moduleDir) + "/**"},
			Args:     []profiles.ArgCond{{Index: 2, Op: profiles.OpMaskedEq, Mask: protWrite, Values: []uint64{0}}},
			Verdict:  profiles.VerdictAllow,
			Reason:   "the dynamic loader maps the modules of the QEMU kfv launched, from under its qemu-bundle, read-only and executable",
		},
	}, p.Rules...)
	return &q
}
