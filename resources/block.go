package resources

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
)

// maxChain bounds a qcow2 backing chain. QEMU has no limit of its own; a
// longer chain is almost certainly a loop through links.
const maxChain = 64

// overlayName is the name QEMU gives the temporary overlay of a drive
// with snapshot=on (and the image vvfat writes through), in overlayDir.
const overlayName = "vl.??????"

// overlayDir is the directory of those overlays for a QEMU whose
// environment has TMPDIR set to tmpdir (set says it is set at all).
// QEMU 7.2 and 10.0 alike (create_tmp_file, measured with strace on
// both) take glib's g_get_tmp_dir(): $TMPDIR when it is set and not
// empty, else /tmp; then /tmp, a tmpfs as often as not, becomes
// /var/tmp, meant for large files. A relative TMPDIR is QEMU's
// working directory's.
func overlayDir(tmpdir string, set bool, cwd string) string {
	if !set || tmpdir == "" || tmpdir == "/tmp" {
		return "/var/tmp"
	}
	return absPath(tmpdir, cwd)
}

// overlay adds the temporary overlay QEMU creates, uses and unlinks for a
// drive with snapshot=on (or vvfat's rw image).
func (d *deriver) overlay(origin string) {
	d.s.addFile(File{Path: "vl.XXXXXX", Abs: escapeGlob(d.tmpdir) + "/" + overlayName, Access: Create, Pattern: true, Image: true, Option: origin})
}

// formatDrivers are block drivers that sit on a file child and may have a
// backing child; filterDrivers pass their file child through.
var formatDrivers = map[string]bool{
	"qcow2": true, "qcow": true, "raw": true, "luks": true, "vmdk": true, "vdi": true,
	"vhdx": true, "vpc": true, "qed": true, "parallels": true, "bochs": true,
	"cloop": true, "dmg": true,
	"throttle": true, "copy-on-read": true, "preallocate": true, "compress": true,
	"blkdebug": true, "blkverify": true, "blklogwrites": true, "quorum": true,
	"replication": true, "copy-before-write": true, "snapshot-access": true,
}

// networkDrivers reach a server kfv does not list.
var networkDrivers = map[string]bool{
	"http": true, "https": true, "ftp": true, "ftps": true, "iscsi": true, "ssh": true,
	"gluster": true, "rbd": true, "nfs": true, "sheepdog": true, "vxhs": true, "curl": true,
}

// keyed appends key= to an origin; after a child prefix ("… file.")
// without a space.
func keyed(origin, key string) string {
	if strings.HasSuffix(origin, ".") {
		return origin + key + "="
	}
	return origin + " " + key + "="
}

// kindOf returns the value of key, which says what kind of backend,
// device or object o is, and origin with the kind and the instance named:
// "-netdev tap (id=n0)".
func kindOf(o *opts, key, origin string) (kind, named string) {
	kind = o.str(key)
	return kind, origin + " " + kind + idOf(o)
}

// idOf names an option's instance for origins: " (id=disk0)".
func idOf(o *opts) string {
	for _, k := range []string{"id", "node-name"} {
		if v, ok := o.vals[k]; ok {
			return fmt.Sprintf(" (%s=%s)", k, v[len(v)-1])
		}
	}
	return ""
}

// drive handles -drive: the image, its format's children and the
// drive-level read-only and snapshot settings.
func (d *deriver) drive(o *opts, origin string) error {
	id := idOf(o)
	ro, err := o.boolean("readonly", false)
	if err != nil {
		return err
	}
	if o.str("media") == "cdrom" {
		ro = true
	}
	snap, err := o.boolean("snapshot", d.snapshot)
	if err != nil {
		return err
	}
	d.aio(o)
	format := o.str("format")
	o.str("if")
	backingGiven := o.has("backing") || o.hasPrefix("backing.")
	if file, ok := o.get("file"); ok && file != "" {
		if err := d.image(file, ro, snap, format, origin+" file="+id, backingGiven); err != nil {
			return err
		}
	}
	a := ReadWrite
	if ro || snap {
		a = ReadOnly
	}
	leaf := d.children(o, origin, id, ro || snap, false)
	if leaf != "" && (format == "" || format == "qcow2") && !backingGiven {
		d.chain(leaf, origin+id, a)
	}
	if snap && !ro && o.str("file") == "" && leaf != "" {
		d.overlay(origin + " snapshot=on" + id)
	}
	d.leftovers(o, origin+id)
	return nil
}

// aio notes aio=io_uring.
func (d *deriver) aio(o *opts) {
	if o.str("aio") == "io_uring" {
		d.s.IOUring = true
	}
}

// image adds a disk image named by -drive file= or -hda and friends: a
// file name, or a protocol ("file:", "json:", "fat:", "nbd:"…). Format
// qcow2, or none (QEMU probes), makes it follow the backing chain unless
// the command line gives the backing child itself.
//
// With snap (snapshot=on, -snapshot) QEMU opens the image read-only and
// writes to a temporary overlay it creates.
func (d *deriver) image(name string, ro, snap bool, format, origin string, backingGiven bool) error {
	if name == "" {
		return nil
	}
	a := ReadWrite
	if ro {
		a = ReadOnly
	}
	if snap && !ro {
		d.overlay(origin + " snapshot=on")
		a = ReadOnly
	}
	if strings.HasPrefix(name, "/dev/fdset/") {
		// qemu_open takes a dup of an fd in an -add-fd set; no open(2).
		return nil
	}
	if proto, rest, ok := protocol(name); ok {
		switch proto {
		case "file", "host_device", "host_cdrom":
			name = rest
		case "json":
			o, err := parseJSONOpts(rest)
			if err != nil {
				return err
			}
			leaf := d.blockNode(o, origin+" json:", a == ReadOnly, false)
			if o.str("driver") == "file" && leaf != "" && (format == "" || format == "qcow2") {
				d.chain(leaf, origin+" json:", a)
			}
			return nil
		case "fat":
			d.vvfat(rest, origin)
			return nil
		case "nbd", "nbd+tcp", "nbd+unix":
			d.nbdURI(name, origin)
			return nil
		case "null-co", "null-aio":
			return nil
		default:
			if networkDrivers[proto] {
				d.s.warnf("%s %s: network block protocol %s connects to a server kfv does not list", origin, name, proto)
			} else {
				d.s.warnf("%s %s: protocol %s not understood; not in the set", origin, name, proto)
			}
			return nil
		}
	}
	abs := absPath(name, d.cwd)
	d.s.addFile(File{Path: name, Abs: abs, Access: a, Image: true, Option: origin})
	if !backingGiven && (format == "" || format == "qcow2") {
		d.chain(abs, origin, a)
	} else if format == "vmdk" {
		d.s.warnf("%s %s: vmdk descriptors name extent files kfv does not read; not in the set", origin, name)
	}
	return nil
}

// protocol splits "proto:rest" as QEMU's path_has_protocol does: a colon
// before any slash.
func protocol(name string) (proto, rest string, ok bool) {
	i := strings.IndexAny(name, ":/\\")
	if i <= 0 || name[i] != ':' {
		return "", "", false
	}
	return name[:i], name[i+1:], true
}

// vvfat adds the directory of a "fat:[rw:][floppy:][12|16|32:]DIR" image.
func (d *deriver) vvfat(rest, origin string) {
	a := ReadOnly
	for {
		head, tail, ok := strings.Cut(rest, ":")
		if !ok {
			break
		}
		switch head {
		case "rw":
			a = ReadWrite
		case "floppy", "12", "16", "32", "hd":
		default:
			goto done
		}
		rest = tail
	}
done:
	d.dir(rest, a, origin+" fat:")
	if a == ReadWrite {
		// vvfat writes through a qcow image it creates in $TMPDIR.
		d.overlay(origin + " fat:rw:")
	}
}

// nbdURI adds the server of an NBD file name: nbd:unix:PATH[:exportname=…],
// nbd:HOST:PORT[:exportname=…], nbd://HOST[:PORT]/EXPORT or
// nbd+unix:///EXPORT?socket=PATH.
func (d *deriver) nbdURI(name, origin string) {
	switch {
	case strings.HasPrefix(name, "nbd:unix:"):
		p, _, _ := strings.Cut(name[len("nbd:unix:"):], ":exportname=")
		d.s.addUnix(absPath(p, d.cwd), Stream, OpConnect, origin+" nbd:unix:")
	case strings.HasPrefix(name, "nbd+unix://"):
		_, q, _ := strings.Cut(name, "?")
		for _, kv := range strings.Split(q, "&") {
			if p, ok := strings.CutPrefix(kv, "socket="); ok {
				d.s.addUnix(absPath(p, d.cwd), Stream, OpConnect, origin+" nbd+unix:")
				return
			}
		}
		d.s.warnf("%s %s: nbd+unix without socket=; not in the set", origin, name)
	case strings.HasPrefix(name, "nbd://"), strings.HasPrefix(name, "nbd+tcp://"):
		_, hp, _ := strings.Cut(name, "://")
		hp, _, _ = strings.Cut(hp, "/")
		host, port, err := SplitHostPort(hp)
		if err != nil {
			host, port = hp, "10809"
		}
		d.s.addInet(host, port, Stream, OpConnect, origin+" nbd:")
	case strings.HasPrefix(name, "nbd:"):
		hp, _, _ := strings.Cut(name[len("nbd:"):], ":exportname=")
		host, port, err := SplitHostPort(hp)
		if err != nil {
			d.s.warnf("%s %s: NBD address not understood; not in the set", origin, name)
			return
		}
		d.s.addInet(host, port, Stream, OpConnect, origin+" nbd:")
	default:
		d.s.warnf("%s %s: NBD address not understood; not in the set", origin, name)
	}
}

// blockNode handles a block node given as options (-blockdev, or a
// nested child such as -drive file.driver=file,file.filename=…). It
// returns the absolute file name of a file-protocol node, "" otherwise.
// top is set for -blockdev, where a string child (file=NAME) names
// another node; in nested children it would be the same.
func (d *deriver) blockNode(o *opts, origin string, ro, top bool) string {
	id := idOf(o)
	if v, err := o.boolean("read-only", false); err == nil && v {
		ro = true
	}
	a := ReadWrite
	if ro {
		a = ReadOnly
	}
	d.aio(o)
	driver := o.str("driver")
	leaf := ""
	switch {
	case driver == "file" || driver == "host_device" || driver == "host_cdrom":
		name := o.str("filename")
		if name != "" && !strings.HasPrefix(name, "/dev/fdset/") {
			leaf = absPath(name, d.cwd)
			if driver == "file" {
				d.s.addFile(File{Path: name, Abs: leaf, Access: a, Image: true, Option: keyed(origin, "filename") + id})
			} else {
				d.s.addDevice(Device{Path: leaf, Access: a, Option: keyed(origin, "filename") + id})
			}
		}
	case formatDrivers[driver]:
		fileLeaf := d.children(o, origin, id, ro, top)
		if driver == "qcow2" && !o.has("backing") && !o.hasPrefix("backing.") {
			// QEMU opens the backing chain the image header names.
			if ref, ok := o.vals["file"]; ok && top && ref[len(ref)-1] != "" {
				d.pending = append(d.pending, pendingChain{ref: ref[len(ref)-1], origin: keyed(origin+id, "file"), access: a})
			} else if fileLeaf != "" {
				d.chain(fileLeaf, origin+id, a)
			}
		} else if driver == "vmdk" {
			d.s.warnf("%s%s: vmdk descriptors name extent files kfv does not read; not in the set", origin, id)
		}
	case driver == "nbd":
		d.nbdNode(o, origin+id)
	case driver == "vvfat":
		rw, _ := o.boolean("rw", false) // a bad value fails in QEMU
		da := ReadOnly
		if rw {
			da = ReadWrite
		}
		d.dir(o.str("dir"), da, keyed(origin, "dir")+id)
	case driver == "null-co" || driver == "null-aio":
	case driver == "nvme":
		d.s.addDevice(Device{Path: "/dev/vfio/vfio", Access: ReadWrite, Option: origin + " driver=nvme" + id})
		d.s.addDevice(Device{Path: "/dev/vfio/*", Access: ReadWrite, Pattern: true, Option: origin + " driver=nvme" + id})
		d.s.warnf("%s%s: the userspace NVMe driver takes the PCI device %s through VFIO; its group is found at run time", origin, id, o.str("device"))
	case networkDrivers[driver]:
		d.s.warnf("%s%s: network block driver %s connects to a server kfv does not list", origin, id, driver)
	case driver == "":
		if !top {
			break
		}
		d.s.warnf("%s%s: no driver=; not in the set", origin, id)
	default:
		d.s.warnf("%s%s: block driver %s not understood; not in the set", origin, id, driver)
	}
	if name := o.str("node-name"); name != "" && leaf != "" {
		d.nodes[name] = leaf
	}
	if !networkDrivers[driver] {
		// A network driver's paths are on the server.
		d.leftovers(o, origin+id)
	}
	return leaf
}

// children handles the children of a format or filter node: file,
// backing, data-file, image, test, raw and children.N, each either a
// nested node (key.driver=…) or, in -blockdev, a node name. For -drive
// (top unset), a string file= is a file name the caller handles. Backing
// children are read-only. It returns the file name of a nested file child.
func (d *deriver) children(o *opts, origin, id string, ro, top bool) (fileLeaf string) {
	names := []string{"file", "backing", "data-file", "image", "test", "raw"}
	for _, k := range o.keys {
		if rest, ok := strings.CutPrefix(k, "children."); ok {
			n, _, _ := strings.Cut(rest, ".")
			if c := "children." + n; !contains(names, c) {
				names = append(names, c)
			}
		}
	}
	for _, c := range names {
		cro := ro || c == "backing"
		if top {
			o.str(c) // a node name: that node is its own -blockdev
		}
		if !o.hasPrefix(c + ".") {
			continue
		}
		sub := o.withPrefix(c + ".")
		leaf := d.blockNode(sub, origin+id+" "+c+".", cro, false)
		if c == "file" {
			fileLeaf = leaf
		}
	}
	return fileLeaf
}

// nbdNode adds the server of an nbd block node.
func (d *deriver) nbdNode(o *opts, origin string) {
	s := o.withPrefix("server.")
	typ := s.str("type")
	if typ == "" {
		// The legacy flat options: path=, host=, port=.
		s = o
		if o.has("path") {
			typ = "unix"
		} else {
			typ = "inet"
		}
	}
	switch typ {
	case "unix":
		d.s.addUnix(absPath(s.str("path"), d.cwd), Stream, OpConnect, origin+" nbd")
	case "inet":
		port := s.strOr("port", "10809")
		d.s.addInet(s.str("host"), port, Stream, OpConnect, origin+" nbd")
	case "fd":
		d.fd(s.str("str"), origin+" nbd server.str=")
	default:
		d.s.warnf("%s: nbd server type %s not understood; not in the set", origin, typ)
	}
}

// chain follows the qcow2 backing chain from the image abs: each backing
// file is added read-only, resolved against the directory of the image
// that names it; an external data file gets the image's access.
func (d *deriver) chain(abs, origin string, a Access) {
	if d.fsys == nil {
		d.s.warnf("%s %s: host files not read; a qcow2 backing chain would not be in the set", origin, abs)
		return
	}
	seen := map[string]bool{abs: true}
	cur := abs
	for depth := 0; ; depth++ {
		if depth == maxChain {
			d.s.warnf("%s: backing chain of %s longer than %d; the rest is not in the set", origin, abs, maxChain)
			return
		}
		h, err := readQCOW2(d.fsys, cur)
		if errors.Is(err, errNotQCOW2) {
			return
		}
		if errors.Is(err, fs.ErrNotExist) {
			if depth == 0 {
				d.s.warnf("%s: %s does not exist (QEMU will fail to open it)", origin, cur)
			} else {
				d.s.warnf("%s: backing file %s does not exist (QEMU will fail to open the chain)", origin, cur)
			}
			return
		}
		if err != nil {
			d.s.warnf("%s: %v; its backing chain is not in the set", origin, err)
			return
		}
		dir := filepath.Dir(cur)
		if h.DataFile != "" {
			d.s.addFile(File{Path: h.DataFile, Abs: absPath(h.DataFile, dir), Access: a, Image: true, Option: fmt.Sprintf("%s, data file of %s", origin, cur)})
		}
		if h.Backing == "" {
			return
		}
		from := fmt.Sprintf("%s, backing file of %s", origin, cur)
		name := h.Backing
		if proto, rest, ok := protocol(name); ok {
			if proto != "file" {
				if err := d.image(name, true, false, h.BackingFormat, from, false); err != nil {
					d.s.warnf("%s: backing file %q: %v; not in the set", from, name, err)
				}
				return
			}
			name = rest
		}
		next := absPath(name, dir)
		if seen[next] {
			d.s.warnf("%s: backing chain loops back to %s", from, next)
			return
		}
		d.s.addFile(File{Path: h.Backing, Abs: next, Access: ReadOnly, Image: true, Option: from})
		seen[next] = true
		if h.BackingFormat != "" && h.BackingFormat != "qcow2" {
			if h.BackingFormat == "vmdk" {
				d.s.warnf("%s: vmdk backing file %s names extent files kfv does not read; not in the set", from, next)
			}
			return
		}
		a = ReadOnly
		cur = next
	}
}
