package guest

import (
	"compress/gzip"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

//go:embed init.sh
var initScript []byte

// linuxFormat changes whenever the builder lays out the initramfs
// differently, so that old caches are not reused.
const linuxFormat = 2

// Linux is a built Linux guest: a Debian kernel and a busybox initramfs.
type Linux struct {
	Kernel  string `json:"kernel"`  // what to pass to -kernel: vmlinux (PVH) or the bzImage
	BzImage string `json:"bzimage"` // the package's compressed /boot/vmlinuz-RELEASE
	Initrd  string `json:"initrd"`  // gzip'd newc cpio path
	PVH     bool   `json:"pvh"`     // Kernel is the uncompressed ELF, booted via its PVH entry

	KernelPackage  string   `json:"kernel_package"` // e.g. linux-image-6.1.0-56-amd64
	KernelVersion  string   `json:"kernel_version"` // Debian version, e.g. 6.1.192-2
	KernelRelease  string   `json:"kernel_release"` // uname -r, e.g. 6.1.0-56-amd64
	BusyboxVersion string   `json:"busybox_version"`
	Modules        []string `json:"modules"` // insmod order, relative to /lib/modules
	Builtin        []string `json:"builtin"` // requested modules the kernel has built in
	Key            string   `json:"key"`     // cache key of the inputs
}

// cacheInputs is everything a Linux guest is built from; its hash names
// the cache entry.
type cacheInputs struct {
	Format         int
	InitScript     string // sha256 of init.sh
	Modules        []string
	KernelPackage  string
	KernelVersion  string
	BusyboxVersion string
	Xz             bool // xz(1) found: the cache holds vmlinux, not only the bzImage
}

func (in cacheInputs) key() string {
	mods := append([]string(nil), in.Modules...)
	sort.Strings(mods)
	h := sha256.New()
	// One field per line; none of the values can contain a newline
	// that would make two inputs collide (package names and versions
	// cannot, module names are checked by the caller's tests).
	fmt.Fprintf(h, "format %d\ninit %s\nmodules %s\nkernel %s=%s\nbusybox %s\nxz %t\n",
		in.Format, in.InitScript, strings.Join(mods, ","), in.KernelPackage, in.KernelVersion, in.BusyboxVersion, in.Xz)
	return hex.EncodeToString(h.Sum(nil))
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// BuildLinux returns the Linux guest cached under cacheDir, building it
// first if its inputs changed: the init script, LinuxModules, and the
// versions apt picks now for the kernel (the dependency of
// linux-image-amd64) and busybox-static. Packages are fetched with
// "apt-get download" (no root needed when apt's lists are present) and
// unpacked with "dpkg-deb -x"; the .debs stay in cacheDir/debs.
func BuildLinux(cacheDir string) (*Linux, error) {
	cacheDir, err := filepath.Abs(cacheDir)
	if err != nil {
		return nil, fmt.Errorf("linux guest cache dir: %w", err)
	}
	kpkg, err := resolveKernelPackage()
	if err != nil {
		return nil, fmt.Errorf("resolve kernel package: %w", err)
	}
	kver, err := candidateVersion(kpkg)
	if err != nil {
		return nil, fmt.Errorf("resolve kernel version: %w", err)
	}
	bver, err := candidateVersion(BusyboxPackage)
	if err != nil {
		return nil, fmt.Errorf("resolve busybox version: %w", err)
	}
	// Debian compresses its kernel with xz; unpacking it needs xz(1).
	// Install it as root; otherwise boot the (slower) bzImage.
	xzErr := EnsureTools("xz")
	if xzErr != nil && !errors.Is(xzErr, ErrNeedRoot) {
		return nil, fmt.Errorf("ensure xz: %w", xzErr)
	}
	in := cacheInputs{
		Format:         linuxFormat,
		InitScript:     sha256Hex(initScript),
		Modules:        LinuxModules,
		KernelPackage:  kpkg,
		KernelVersion:  kver,
		BusyboxVersion: bver,
		Xz:             xzErr == nil,
	}
	key := in.key()
	out := filepath.Join(cacheDir, "linux-"+key[:16])
	if l, err := loadManifest(out); err == nil && l.Key == key {
		// Mark the entry as in use, so that pruneLinux elsewhere keeps it.
		now := time.Now()
		if err := os.Chtimes(out, now, now); err != nil {
			return nil, fmt.Errorf("touch guest cache entry: %w", err)
		}
		return l, nil
	}
	return buildLinux(cacheDir, out, in, key)
}

func loadManifest(dir string) (*Linux, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, err
	}
	var l Linux
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, "manifest.json"), err)
	}
	l.Kernel = filepath.Join(dir, l.Kernel)
	l.BzImage = filepath.Join(dir, l.BzImage)
	l.Initrd = filepath.Join(dir, l.Initrd)
	for _, p := range []string{l.Kernel, l.BzImage, l.Initrd} {
		if _, err := os.Stat(p); err != nil {
			return nil, err
		}
	}
	return &l, nil
}

func buildLinux(cacheDir, out string, in cacheInputs, key string) (l *Linux, err error) {
	debs := filepath.Join(cacheDir, "debs")
	kdeb, err := aptDownload(debs, in.KernelPackage, in.KernelVersion)
	if err != nil {
		return nil, fmt.Errorf("download kernel: %w", err)
	}
	bdeb, err := aptDownload(debs, BusyboxPackage, in.BusyboxVersion)
	if err != nil {
		return nil, fmt.Errorf("download busybox: %w", err)
	}
	work, err := os.MkdirTemp(cacheDir, ".build-")
	if err != nil {
		return nil, fmt.Errorf("create build dir: %w", err)
	}
	defer func() {
		if rerr := os.RemoveAll(work); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove build dir: %w", rerr))
		}
	}()
	kroot := filepath.Join(work, "kernel")
	if _, err := runCmd("", "dpkg-deb", "-x", kdeb, kroot); err != nil {
		return nil, fmt.Errorf("unpack kernel: %w", err)
	}
	broot := filepath.Join(work, "busybox")
	if _, err := runCmd("", "dpkg-deb", "-x", bdeb, broot); err != nil {
		return nil, fmt.Errorf("unpack busybox: %w", err)
	}

	vmlinuz, release, err := findKernel(kroot)
	if err != nil {
		return nil, err
	}
	tree, err := scanModuleTree(filepath.Join(kroot, "lib", "modules", release))
	if err != nil {
		return nil, err
	}
	dep, loadable, builtin, err := tree.closure(in.Modules)
	if err != nil {
		return nil, fmt.Errorf("resolve guest modules: %w", err)
	}
	order, err := dep.LoadOrder(loadable)
	if err != nil {
		return nil, fmt.Errorf("resolve guest modules: %w", err)
	}
	busybox, err := os.ReadFile(filepath.Join(broot, "bin", "busybox"))
	if err != nil {
		return nil, fmt.Errorf("read busybox from %s: %w", filepath.Base(bdeb), err)
	}

	stage := filepath.Join(work, "out")
	if err := os.Mkdir(stage, 0o755); err != nil {
		return nil, fmt.Errorf("create stage dir: %w", err)
	}
	if err := copyFile(vmlinuz, filepath.Join(stage, "vmlinuz")); err != nil {
		return nil, fmt.Errorf("copy kernel: %w", err)
	}
	l = &Linux{
		Kernel:         "vmlinuz",
		BzImage:        "vmlinuz",
		Initrd:         "initrd.gz",
		KernelPackage:  in.KernelPackage,
		KernelVersion:  in.KernelVersion,
		KernelRelease:  release,
		BusyboxVersion: in.BusyboxVersion,
		Builtin:        builtin,
		Key:            key,
	}
	if in.Xz {
		vmlinux := filepath.Join(stage, "vmlinux")
		if err := extractVmlinux(vmlinuz, vmlinux); err != nil {
			return nil, err
		}
		pvh, err := hasPVHNote(vmlinux)
		if err != nil {
			return nil, err
		}
		if pvh {
			l.Kernel, l.PVH = "vmlinux", true
		} else if err := os.Remove(vmlinux); err != nil {
			return nil, fmt.Errorf("remove vmlinux without PVH entry: %w", err)
		}
	}
	for _, p := range order {
		l.Modules = append(l.Modules, release+"/"+p)
	}
	if err := writeInitramfs(filepath.Join(stage, "initrd.gz"), tree, dep, l.Modules, busybox, release); err != nil {
		return nil, err
	}
	mb, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("marshal manifest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(stage, "manifest.json"), append(mb, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("write manifest: %w", err)
	}
	if err := os.RemoveAll(out); err != nil {
		return nil, fmt.Errorf("remove stale guest %s: %w", out, err)
	}
	if err := os.Rename(stage, out); err != nil {
		// Another builder may have finished the same key first.
		if got, lerr := loadManifest(out); lerr == nil && got.Key == key {
			return got, nil
		}
		return nil, fmt.Errorf("install guest: %w", err)
	}
	if err := pruneLinux(cacheDir, out); err != nil {
		return nil, err
	}
	return loadManifest(out)
}

// pruneLinux removes the Linux guests that out supersedes (about 75 MB
// each, mostly vmlinux).
func pruneLinux(cacheDir, out string) error {
	old, err := filepath.Glob(filepath.Join(cacheDir, "linux-*"))
	if err != nil {
		return fmt.Errorf("list old guests: %w", err)
	}
	var errs []error
	for _, d := range old {
		if d == out {
			continue
		}
		// Keep entries used in the last hour: another checkout or test run
		// (with another init script) may be using them right now.
		if fi, err := os.Stat(d); err == nil && time.Since(fi.ModTime()) < time.Hour {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove old guest: %w", err))
		}
	}
	return errors.Join(errs...)
}

// findKernel returns the vmlinuz of an unpacked linux-image package and
// its release (the suffix of /boot/vmlinuz-RELEASE).
func findKernel(root string) (path, release string, err error) {
	m, err := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if err != nil {
		return "", "", fmt.Errorf("find vmlinuz: %w", err)
	}
	if len(m) != 1 {
		return "", "", fmt.Errorf("find vmlinuz: want one boot/vmlinuz-* in kernel package, got %d", len(m))
	}
	return m[0], strings.TrimPrefix(filepath.Base(m[0]), "vmlinuz-"), nil
}

func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, out.Close()) }()
	_, err = io.Copy(out, in)
	return err
}

// writeInitramfs writes the gzip'd cpio: busybox, /init, the modules in
// their original tree with a modules.dep (so busybox modprobe works too),
// /etc/kfv-modules (the insmod order) and /dev/console, which the kernel
// opens for /init before any devtmpfs is mounted.
func writeInitramfs(path string, tree *moduleTree, dep modulesDep, order []string, busybox []byte, release string) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	gz, err := gzip.NewWriterLevel(f, gzip.BestCompression)
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	c := newCPIOWriter(gz)
	dirs := map[string]bool{}
	mkdirs := func(p string) {
		var parts []string
		for d := filepath.Dir(p); d != "." && d != "/"; d = filepath.Dir(d) {
			parts = append(parts, d)
		}
		for i := len(parts) - 1; i >= 0; i-- {
			if !dirs[parts[i]] {
				dirs[parts[i]] = true
				c.Dir(parts[i], 0o755)
			}
		}
	}
	for _, d := range []string{"dev", "proc", "sys", "tmp", "etc", "bin", "sbin", "usr/bin", "usr/sbin"} {
		mkdirs(d + "/x")
	}
	c.CharDev("dev/console", 0o600, 5, 1)
	c.File("init", 0o755, initScript)
	c.File("bin/busybox", 0o755, busybox)
	c.Symlink("bin/sh", "busybox")

	var rels []string
	for p := range dep {
		rels = append(rels, p)
	}
	sort.Strings(rels)
	modRoot := "lib/modules/" + release
	for _, p := range rels {
		b, err := os.ReadFile(filepath.Join(tree.root, p))
		if err != nil {
			return fmt.Errorf("read module: %w", err)
		}
		mkdirs(modRoot + "/" + p)
		c.File(modRoot+"/"+p, 0o644, b)
	}
	mkdirs(modRoot + "/modules.dep")
	c.File(modRoot+"/modules.dep", 0o644, dep.Format())
	c.File("etc/kfv-modules", 0o644, []byte(strings.Join(order, "\n")+"\n"))
	if err := c.Close(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	return nil
}
