package guest

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// LinuxModules are the drivers the Linux guest asks for. In Debian 12's
// kernel (config-6.1.0-*-amd64) all of them are modules, not built in:
// CONFIG_VIRTIO=m, CONFIG_VIRTIO_PCI=m, CONFIG_VIRTIO_BLK=m,
// CONFIG_VIRTIO_NET=m, CONFIG_VIRTIO_CONSOLE=m, CONFIG_HW_RANDOM_VIRTIO=m;
// only CONFIG_VIRTIO_ANCHOR, the 8250 serial console, devtmpfs, the
// gzip initramfs decompressor, packet/unix/inet sockets are =y. A name
// listed in modules.builtin of the kernel package is skipped, so a
// kernel that builds one in needs no change here.
var LinuxModules = []string{
	"virtio_pci",
	"virtio_blk",
	"virtio_net",
	"virtio_console",
	"virtio_rng",
	// The CD-ROM of the benign suite: an ide-cd on q35's AHCI controller
	// (CONFIG_SATA_AHCI=m, CONFIG_BLK_DEV_SR=m).
	"ahci",
	"sr_mod",
	// The benign matrix's disks, share and devices: SCSI and SATA disks
	// (CONFIG_BLK_DEV_SD=m) on AHCI, PIIX IDE (CONFIG_ATA_PIIX=m),
	// virtio-scsi (CONFIG_SCSI_VIRTIO=m), NVMe (CONFIG_BLK_DEV_NVME=m), the
	// floppy (CONFIG_BLK_DEV_FD=m), USB storage on xHCI
	// (CONFIG_USB_XHCI_PCI=m, CONFIG_USB_STORAGE=m), 9p over virtio
	// (CONFIG_NET_9P_VIRTIO=m, CONFIG_9P_FS=m) and the balloon
	// (CONFIG_VIRTIO_BALLOON=m).
	"sd_mod",
	"ata_piix",
	"virtio_scsi",
	"nvme",
	"floppy",
	"xhci_pci",
	"usb_storage",
	"9pnet_virtio",
	"9p",
	"virtio_balloon",
}

// modName normalises a module name as the kernel does (dashes and
// underscores are the same).
func modName(s string) string {
	s = filepath.Base(s)
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// parseModinfo returns the "depends" entry of a .modinfo section: NUL
// separated key=value strings written by modpost.
func parseModinfo(sec []byte) (depends []string) {
	for _, kv := range bytes.Split(sec, []byte{0}) {
		v, ok := bytes.CutPrefix(kv, []byte("depends="))
		if !ok {
			continue
		}
		for _, d := range strings.Split(string(v), ",") {
			if d != "" {
				depends = append(depends, modName(d))
			}
		}
	}
	return depends
}

// readModuleDepends reads the direct dependencies of the module file at path.
func readModuleDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("read module %s: no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read module %s .modinfo: %w", path, err)
	}
	return parseModinfo(data), nil
}

// modulesDep maps a module's path (relative to /lib/modules/RELEASE) to
// the paths of its dependencies, in the format of depmod's modules.dep:
// "kernel/a.ko: kernel/b.ko kernel/c.ko". Debian's linux-image package
// does not ship modules.dep (depmod writes it at install time), so the
// builder writes one for the modules it packs and reads it back here.
type modulesDep map[string][]string

func parseModulesDep(r io.Reader) (modulesDep, error) {
	dep := make(modulesDep)
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(s, ":")
		if !ok || mod == "" {
			return nil, fmt.Errorf("modules.dep line %d: want \"module.ko: deps...\", got %q", line, s)
		}
		if _, dup := dep[mod]; dup {
			return nil, fmt.Errorf("modules.dep line %d: module %s listed twice", line, mod)
		}
		dep[mod] = strings.Fields(rest)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	return dep, nil
}

// Format writes dep in modules.dep format, sorted for reproducibility.
func (dep modulesDep) Format() []byte {
	var keys []string
	for k := range dep {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		b.WriteString(k + ":")
		for _, d := range dep[k] {
			b.WriteString(" " + d)
		}
		b.WriteString("\n")
	}
	return b.Bytes()
}

// LoadOrder returns the module paths to insmod, dependencies before the
// modules that need them, for the wanted module names. Each module
// appears once; a cycle or an unknown module is an error.
func (dep modulesDep) LoadOrder(want []string) ([]string, error) {
	byName := make(map[string]string, len(dep))
	for p := range dep {
		byName[modName(p)] = p
	}
	const (
		visiting = 1
		done     = 2
	)
	state := make(map[string]int)
	var order []string
	var visit func(p string, chain []string) error
	visit = func(p string, chain []string) error {
		switch state[p] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, modName(p)), " -> "))
		}
		deps, ok := dep[p]
		if !ok {
			return fmt.Errorf("module %s: not in modules.dep", p)
		}
		state[p] = visiting
		for _, d := range deps {
			if err := visit(d, append(chain, modName(p))); err != nil {
				return err
			}
		}
		state[p] = done
		order = append(order, p)
		return nil
	}
	for _, w := range want {
		p, ok := byName[modName(w)]
		if !ok {
			return nil, fmt.Errorf("module %s: not in modules.dep", w)
		}
		if err := visit(p, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleTree describes the modules of one extracted kernel package.
type moduleTree struct {
	root    string              // .../lib/modules/RELEASE
	paths   map[string]string   // module name -> path relative to root
	builtin map[string]struct{} // names from modules.builtin
}

func scanModuleTree(root string) (*moduleTree, error) {
	t := &moduleTree{root: root, paths: make(map[string]string), builtin: make(map[string]struct{})}
	err := filepath.WalkDir(filepath.Join(root, "kernel"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".ko") {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		t.paths[modName(p)] = filepath.ToSlash(rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan kernel modules in %s: %w", root, err)
	}
	b, err := os.ReadFile(filepath.Join(root, "modules.builtin"))
	if err != nil {
		return nil, fmt.Errorf("read modules.builtin: %w", err)
	}
	for _, l := range strings.Fields(string(b)) {
		t.builtin[modName(l)] = struct{}{}
	}
	return t, nil
}

// closure builds modules.dep for the wanted modules and everything they
// need, reading each module's .modinfo. Built-in names are dropped, and
// returned separately so that the builder can report them.
func (t *moduleTree) closure(want []string) (dep modulesDep, loadable, builtin []string, err error) {
	dep = make(modulesDep)
	direct := make(map[string][]string) // path -> direct dep paths
	var add func(name string) error
	add = func(name string) error {
		p, ok := t.paths[name]
		if !ok {
			return fmt.Errorf("module %s: not found under %s", name, t.root)
		}
		if _, seen := direct[p]; seen {
			return nil
		}
		names, err := readModuleDepends(filepath.Join(t.root, p))
		if err != nil {
			return err
		}
		direct[p] = nil
		for _, n := range names {
			if err := add(n); err != nil {
				return fmt.Errorf("%s needs %w", name, err)
			}
			direct[p] = append(direct[p], t.paths[n])
		}
		return nil
	}
	for _, w := range want {
		n := modName(w)
		if _, ok := t.builtin[n]; ok {
			builtin = append(builtin, n)
			continue
		}
		if err := add(n); err != nil {
			return nil, nil, nil, err
		}
		loadable = append(loadable, n)
	}
	// modules.dep lists every transitive dependency, the ones to load
	// first last, as depmod does.
	for p := range direct {
		order, err := modulesDep(direct).LoadOrder([]string{p})
		if err != nil {
			return nil, nil, nil, err
		}
		order = order[:len(order)-1] // p itself
		for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
			order[i], order[j] = order[j], order[i]
		}
		dep[p] = order
	}
	return dep, loadable, builtin, nil
}
