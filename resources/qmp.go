package resources

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
)

// Needs is what one monitor command asks QEMU to use on the host.
type Needs struct {
	// Set holds the files, directory trees, sockets, devices and
	// inherited fds the command names, with the access QEMU needs, and
	// Warnings for what the command may use that the set does not
	// describe. Its Name and Accels are empty. Never nil.
	Set *Set
	// Exec lists the shell commands QEMU would run for the command
	// (migrate and migrate-incoming "exec:"). The profile denies execve
	// in QEMU, so a hook should refuse such a command: the manager then
	// gets a clear error instead of a migration that fails inside QEMU.
	Exec []string
}

// Empty reports whether the command names nothing on the host.
func (n *Needs) Empty() bool {
	s := n.Set
	return len(s.Files) == 0 && len(s.Dirs) == 0 && len(s.Sockets) == 0 && len(s.Devices) == 0 &&
		len(s.FDs) == 0 && !s.NetUser && !s.IOUring && len(n.Exec) == 0
}

// FromQMP returns what the QMP command cmd with arguments args (a JSON
// object, or nil) names on the host, resolving relative names against
// cwd, QEMU's working directory. fsys is the host's file system rooted at
// "/" (HostFS), read for qcow2 headers so that the backing chain of an
// image a command opens is in the set; a nil fsys reads nothing, and a
// warning says the chain is not followed.
//
// An error means the arguments are malformed where it matters (QEMU would
// refuse them too). Commands that name nothing, and commands FromQMP
// does not know, return an empty set; for those, string arguments that
// look like paths are reported in Set.Warnings.
//
// Covered (QMP, and the same commands through human-monitor-command):
//
//	blockdev-add, blockdev-reopen     as -blockdev: file, host_device,
//	                                  host_cdrom filename, nested children
//	blockdev-change-medium, change    filename as -drive file=, format=
//	blockdev-create                   options.filename of driver file (create)
//	drive-mirror, drive-backup        target (create, or read-write with mode existing)
//	blockdev-snapshot-sync            snapshot-file (create)
//	netdev_add                        as -netdev
//	chardev-add, chardev-change       the backend's paths and sockets
//	device_add                        as -device (romfile=, …)
//	object-add                        as -object (mem-path, filename, …)
//	migrate                           uri / channels: file: (create), unix:
//	                                  and tcp: (connect), exec: (Exec)
//	migrate-incoming                  as -incoming; exec: (Exec)
//	screendump, pmemsave, memsave,
//	dump-skeys                        filename (create)
//	dump-guest-memory                 protocol "file:PATH" (create)
//	nbd-server-start                  addr (bind)
//	human-monitor-command             as FromHMP
//
// Node names (file: "node0") are not resolved: the node they name was
// admitted when it was added. Fds passed with getfd or add-fd need no
// open, and /dev/fdset/N names are skipped.
func FromQMP(cmd string, args json.RawMessage, cwd string, fsys fs.FS) (*Needs, error) {
	if !filepath.IsAbs(cwd) {
		return nil, fmt.Errorf("resources of %s: working directory %q is not absolute", cmd, cwd)
	}
	x := &extractor{n: &Needs{Set: &Set{}}, cwd: filepath.Clean(cwd), fsys: fsys, origin: "QMP " + cmd}
	var a map[string]json.RawMessage
	if len(args) > 0 && string(args) != "null" {
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, fmt.Errorf("resources of %s: arguments: %w", cmd, err)
		}
	}
	if err := x.qmp(cmd, args, a); err != nil {
		return nil, fmt.Errorf("resources of %s: %w", cmd, err)
	}
	return x.n, nil
}

// FromHMP returns what the HMP command line (as human-monitor-command
// carries it) names on the host, as FromQMP does for a QMP command.
// Covered: drive_add, change, netdev_add, device_add, object_add,
// chardev-add, chardev-change, migrate, migrate_incoming, screendump,
// dump-guest-memory, memsave, pmemsave, drive_mirror, drive_backup,
// snapshot_blkdev and logfile; qemu-io is warned about, and words of
// other commands that look like paths are reported in Set.Warnings.
func FromHMP(line, cwd string, fsys fs.FS) (*Needs, error) {
	if !filepath.IsAbs(cwd) {
		return nil, fmt.Errorf("resources of HMP command: working directory %q is not absolute", cwd)
	}
	x := &extractor{n: &Needs{Set: &Set{}}, cwd: filepath.Clean(cwd), fsys: fsys, origin: "HMP"}
	if err := x.hmp(line); err != nil {
		return nil, fmt.Errorf("resources of HMP command: %w", err)
	}
	return x.n, nil
}

// extractor collects one command's needs.
type extractor struct {
	n      *Needs
	cwd    string
	fsys   fs.FS
	origin string
}

// str returns a string member, "" when absent; a member of another type
// is an error.
func str(a map[string]json.RawMessage, k string) (string, error) {
	v, ok := a[k]
	if !ok || string(v) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("%s: want a string", k)
	}
	return s, nil
}

// obj decodes an object member; absent is nil.
func obj(a map[string]json.RawMessage, k string) (map[string]json.RawMessage, error) {
	v, ok := a[k]
	if !ok || string(v) == "null" {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("%s: want an object", k)
	}
	return m, nil
}

func (x *extractor) qmp(cmd string, raw json.RawMessage, a map[string]json.RawMessage) error {
	switch cmd {
	case "blockdev-add":
		return x.option("-blockdev", string(raw))
	case "blockdev-reopen", "x-blockdev-reopen":
		var o struct {
			Options []json.RawMessage `json:"options"`
		}
		if err := json.Unmarshal(raw, &o); err != nil {
			return fmt.Errorf("options: %w", err)
		}
		for _, b := range o.Options {
			if err := x.option("-blockdev", string(b)); err != nil {
				return err
			}
		}
		if len(o.Options) == 0 && cmd == "x-blockdev-reopen" {
			return x.option("-blockdev", string(raw))
		}
	case "blockdev-change-medium":
		file, err := str(a, "filename")
		if err != nil {
			return err
		}
		format, err := str(a, "format")
		if err != nil {
			return err
		}
		mode, err := str(a, "read-only-mode")
		if err != nil {
			return err
		}
		return x.medium(file, format, mode)
	case "change":
		dev, err := str(a, "device")
		if err != nil {
			return err
		}
		target, err := str(a, "target")
		if err != nil {
			return err
		}
		format, err := str(a, "arg")
		if err != nil {
			return err
		}
		if dev == "vnc" {
			return nil // target is "password"
		}
		return x.medium(target, format, "")
	case "blockdev-create":
		o, err := obj(a, "options")
		if err != nil {
			return err
		}
		if drv, _ := str(o, "driver"); drv == "file" {
			name, err := str(o, "filename")
			if err != nil {
				return err
			}
			x.file(name, Create, "options.filename=")
		}
	case "drive-mirror", "drive-backup":
		target, err := str(a, "target")
		if err != nil {
			return err
		}
		mode, err := str(a, "mode")
		if err != nil {
			return err
		}
		x.newImage(target, mode, "target=")
	case "blockdev-snapshot-sync":
		name, err := str(a, "snapshot-file")
		if err != nil {
			return err
		}
		mode, err := str(a, "mode")
		if err != nil {
			return err
		}
		x.newImage(name, mode, "snapshot-file=")
	case "netdev_add":
		return x.option("-netdev", string(raw))
	case "device_add":
		return x.option("-device", string(raw))
	case "object-add":
		return x.option("-object", string(raw))
	case "chardev-add", "chardev-change":
		return x.chardev(a)
	case "migrate":
		return x.migrateArgs(a, false)
	case "migrate-incoming":
		return x.migrateArgs(a, true)
	case "screendump", "pmemsave", "memsave", "dump-skeys":
		name, err := str(a, "filename")
		if err != nil {
			return err
		}
		x.file(name, Create, "filename=")
	case "dump-guest-memory":
		proto, err := str(a, "protocol")
		if err != nil {
			return err
		}
		if p, ok := strings.CutPrefix(proto, "file:"); ok {
			x.file(p, Create, "protocol=file:")
		} else if !strings.HasPrefix(proto, "fd:") {
			return fmt.Errorf("protocol %q: want file:PATH or fd:NAME", proto)
		}
	case "nbd-server-start":
		addr, err := obj(a, "addr")
		if err != nil {
			return err
		}
		return x.socketAddressType(addr, true, OpBind, Stream, "addr.")
	case "human-monitor-command":
		line, err := str(a, "command-line")
		if err != nil {
			return err
		}
		x.origin = "HMP"
		return x.hmp(line)
	default:
		x.scan(a, "", 0)
	}
	return nil
}

// option derives the resources of one command-line option with value v,
// as if QEMU had been started with it, through FromArgs: the
// QMP arguments of blockdev-add, netdev_add, device_add and object-add
// are what -blockdev, -netdev, -device and -object take as JSON.
func (x *extractor) option(name, v string) error {
	// -nodefaults and -accel keep FromArgs from adding what a whole VM
	// has (QEMU's default NIC, the accelerator's device).
	set, err := FromArgs([]string{"-nodefaults", "-accel", "tcg", name, v}, x.cwd, x.fsys)
	if err != nil {
		return err
	}
	x.merge(set, name)
	return nil
}

// fdNameWarning is part of the warning FromArgs gives for fd names, which
// on the command line are errors but over QMP are what getfd made.
const fdNameWarning = "named fds come from QMP getfd"

// merge adds a derived set, naming the command instead of the option.
func (x *extractor) merge(set *Set, option string) {
	fix := func(s string) string {
		if r, ok := strings.CutPrefix(s, option); ok {
			return x.origin + r
		}
		return s
	}
	s := x.n.Set
	for _, f := range set.Files {
		f.Option = fix(f.Option)
		s.Files = appendNew(s.Files, f)
	}
	for _, d := range set.Dirs {
		d.Option = fix(d.Option)
		s.Dirs = appendNew(s.Dirs, d)
	}
	for _, k := range set.Sockets {
		k.Option = fix(k.Option)
		s.Sockets = appendNew(s.Sockets, k)
	}
	for _, d := range set.Devices {
		d.Option = fix(d.Option)
		s.Devices = appendNew(s.Devices, d)
	}
	for _, f := range set.FDs {
		f.Option = fix(f.Option)
		s.FDs = appendNew(s.FDs, f)
	}
	for _, w := range set.Warnings {
		if !strings.Contains(w, fdNameWarning) {
			s.Warnings = appendNew(s.Warnings, fix(w))
		}
	}
	s.NetUser = s.NetUser || set.NetUser
	s.IOUring = s.IOUring || set.IOUring
}

func appendNew[T comparable](s []T, v T) []T {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

// abs resolves p against QEMU's working directory.
func (x *extractor) abs(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(x.cwd, p)
}

// file adds a plain file name (no protocol prefix).
func (x *extractor) file(p string, a Access, key string) {
	if p == "" {
		return
	}
	x.n.Set.Files = appendNew(x.n.Set.Files, File{Path: p, Abs: x.abs(p), Access: a, Option: x.origin + " " + key})
}

// warnf adds a warning.
func (x *extractor) warnf(format string, args ...any) {
	x.n.Set.Warnings = appendNew(x.n.Set.Warnings, fmt.Sprintf(format, args...))
}

// medium adds a removable medium: QEMU opens filename (which may carry a
// protocol, as -drive file= may) with format. Read-only mode "retain"
// (the default) keeps the drive's setting, which only QEMU knows: the
// medium is admitted read-write then.
func (x *extractor) medium(file, format, mode string) error {
	if file == "" {
		return nil
	}
	v := "if=none,file=" + EscapeOpt(file)
	if format != "" {
		v += ",format=" + EscapeOpt(format)
	}
	switch mode {
	case "read-only":
		v += ",readonly=on"
	case "", "retain", "read-write":
	default:
		return fmt.Errorf("read-only-mode %q: want retain, read-only or read-write", mode)
	}
	return x.option("-drive", v)
}

// newImage adds an image QEMU creates (mode absolute-paths, the default)
// or opens as it is (mode existing).
func (x *extractor) newImage(p, mode, key string) {
	a := Create
	if mode == "existing" {
		a = ReadWrite
	}
	if strings.HasPrefix(p, "/dev/fdset/") {
		return
	}
	x.file(p, a, key)
}

// chardev adds the backend of chardev-add and chardev-change, turned into
// the -chardev options that mean the same.
func (x *extractor) chardev(a map[string]json.RawMessage) error {
	id, err := str(a, "id")
	if err != nil {
		return err
	}
	b, err := obj(a, "backend")
	if err != nil {
		return err
	}
	typ, err := str(b, "type")
	if err != nil {
		return err
	}
	data, err := obj(b, "data")
	if err != nil {
		return err
	}
	opts := []string{typ, "id=" + EscapeOpt(id)}
	add := func(k, jsonKey string) error {
		v, err := str(data, jsonKey)
		if err != nil {
			return err
		}
		if v != "" {
			opts = append(opts, k+"="+EscapeOpt(v))
		}
		return nil
	}
	if err := add("logfile", "logfile"); err != nil {
		return err
	}
	switch typ {
	case "file":
		if err := add("path", "out"); err != nil {
			return err
		}
		if err := add("input-path", "in"); err != nil {
			return err
		}
	case "serial", "parallel", "pipe":
		if err := add("path", "device"); err != nil {
			return err
		}
	case "socket":
		addr, err := obj(data, "addr")
		if err != nil {
			return err
		}
		server := false
		if v, ok := data["server"]; ok && json.Unmarshal(v, &server) != nil {
			return errors.New("backend.data.server: want a boolean")
		}
		op := OpConnect
		if server {
			op = OpBind
		}
		x.origin += " " + id
		return x.socketAddressType(addr, true, op, Stream, "backend.data.addr.")
	case "udp":
		remote, err := obj(data, "remote")
		if err != nil {
			return err
		}
		local, err := obj(data, "local")
		if err != nil {
			return err
		}
		x.origin += " " + id
		if err := x.socketAddressType(remote, true, OpConnect, Dgram, "backend.data.remote."); err != nil {
			return err
		}
		if local != nil {
			return x.socketAddressType(local, true, OpBind, Dgram, "backend.data.local.")
		}
		return nil
	}
	return x.option("-chardev", strings.Join(opts, ","))
}

// socketAddressType adds a SocketAddress (flat: {"type": "unix", "path":
// …}) or, with legacy, a SocketAddressLegacy ({"type": "unix", "data":
// {…}}), as a socket of type typ; key names it in messages.
func (x *extractor) socketAddressType(a map[string]json.RawMessage, legacy bool, op, typ, key string) error {
	if a == nil {
		return errors.New(key + "type: missing address")
	}
	kind, err := str(a, "type")
	if err != nil {
		return err
	}
	if legacy {
		if d, ok := a["data"]; ok {
			if err := json.Unmarshal(d, &a); err != nil {
				return fmt.Errorf("%sdata: want an object", key)
			}
		}
	}
	origin := x.origin + " " + key
	s := x.n.Set
	switch kind {
	case "unix":
		p, err := str(a, "path")
		if err != nil {
			return err
		}
		if p == "" {
			return errors.New(key + "path: empty unix socket path")
		}
		addr := x.abs(p)
		abstract := false
		if v, ok := a["abstract"]; ok && json.Unmarshal(v, &abstract) != nil {
			return errors.New(key + "abstract: want a boolean")
		}
		if abstract {
			addr = "@" + p
		}
		s.Sockets = appendNew(s.Sockets, Socket{Family: FamilyUnix, Type: typ, Address: addr, Op: op, Option: origin + "path="})
	case "inet":
		host, err := str(a, "host")
		if err != nil {
			return err
		}
		port, err := str(a, "port")
		if err != nil {
			return err
		}
		if to, ok := a["to"]; ok {
			port += "-" + strings.Trim(string(to), `"`)
		}
		s.Sockets = appendNew(s.Sockets, Socket{Family: inetFamily(host), Type: typ, Address: joinHostPort(host, port), Op: op, Option: origin + "host=,port="})
	case "vsock":
		cid, err := str(a, "cid")
		if err != nil {
			return err
		}
		port, err := str(a, "port")
		if err != nil {
			return err
		}
		s.Sockets = appendNew(s.Sockets, Socket{Family: FamilyVsock, Type: typ, Address: cid + ":" + port, Op: op, Option: origin + "cid=,port="})
	case "fd":
		// A monitor fd name (getfd) or a number in QEMU's fd table: no
		// open or connect.
	default:
		return fmt.Errorf("%stype %q: want unix, inet, vsock or fd", key, kind)
	}
	return nil
}

// migrateArgs handles migrate and migrate-incoming: a uri, or (QEMU 8.2
// and later) a list of channels.
func (x *extractor) migrateArgs(a map[string]json.RawMessage, incoming bool) error {
	uri, err := str(a, "uri")
	if err != nil {
		return err
	}
	if uri != "" {
		return x.migrateURI(uri, incoming)
	}
	var chans []struct {
		Addr map[string]json.RawMessage `json:"addr"`
	}
	if c, ok := a["channels"]; ok {
		if err := json.Unmarshal(c, &chans); err != nil {
			return fmt.Errorf("channels: %w", err)
		}
	}
	for _, c := range chans {
		if err := x.migrationAddress(c.Addr, incoming); err != nil {
			return err
		}
	}
	return nil
}

// migrationAddress handles one MigrationAddress (QEMU 8.2 and later).
func (x *extractor) migrationAddress(a map[string]json.RawMessage, incoming bool) error {
	op := OpConnect
	if incoming {
		op = OpBind
	}
	transport, err := str(a, "transport")
	if err != nil {
		return err
	}
	switch transport {
	case "socket":
		return x.socketAddressType(a, false, op, Stream, "channels.addr.")
	case "exec":
		var e struct {
			Args []string `json:"args"`
		}
		b, err := json.Marshal(a)
		if err != nil {
			return fmt.Errorf("channels.addr: %w", err)
		}
		if err := json.Unmarshal(b, &e); err != nil {
			return fmt.Errorf("channels.addr.args: %w", err)
		}
		x.n.Exec = append(x.n.Exec, strings.Join(e.Args, " "))
	case "file":
		name, err := str(a, "filename")
		if err != nil {
			return err
		}
		acc := Create
		if incoming {
			acc = ReadOnly
		}
		x.file(name, acc, "channels.addr.filename=")
	case "rdma":
		x.warnf("%s: RDMA migration uses verbs devices (/dev/infiniband) kfv does not list", x.origin)
		host, err := str(a, "host")
		if err != nil {
			return err
		}
		port, err := str(a, "port")
		if err != nil {
			return err
		}
		x.n.Set.Sockets = appendNew(x.n.Set.Sockets, Socket{Family: inetFamily(host), Type: Stream, Address: joinHostPort(host, port), Op: op, Option: x.origin + " channels.addr rdma"})
	default:
		return fmt.Errorf("channels.addr.transport %q: want socket, exec, file or rdma", transport)
	}
	return nil
}

// migrateURI handles a migration URI: outgoing (migrate) connects or
// creates, incoming binds or reads.
func (x *extractor) migrateURI(uri string, incoming bool) error {
	proto, rest, ok := strings.Cut(uri, ":")
	if !ok {
		return fmt.Errorf("uri %q: want PROTOCOL:ADDRESS", uri)
	}
	switch proto {
	case "exec":
		x.n.Exec = append(x.n.Exec, rest)
		return nil
	case "fd":
		return nil // a getfd name or a number: no open
	}
	if incoming {
		// The same syntax as -incoming.
		return x.option("-incoming", uri)
	}
	s := x.n.Set
	switch proto {
	case "unix":
		if rest == "" {
			return errors.New("unix: empty socket path")
		}
		s.Sockets = appendNew(s.Sockets, Socket{Family: FamilyUnix, Type: Stream, Address: x.abs(rest), Op: OpConnect, Option: x.origin + " unix:"})
	case "file":
		// QEMU 8.2 and later: file:PATH[,offset=N].
		p, _, _ := strings.Cut(rest, ",")
		x.file(p, Create, "file:")
	case "tcp", "rdma":
		hp, _, _ := strings.Cut(rest, ",")
		host, port, err := splitHostPort(hp)
		if err != nil {
			return err
		}
		s.Sockets = appendNew(s.Sockets, Socket{Family: inetFamily(host), Type: Stream, Address: joinHostPort(host, port), Op: OpConnect, Option: x.origin + " " + proto + ":"})
		if proto == "rdma" {
			x.warnf("%s %s: RDMA migration uses verbs devices (/dev/infiniband) kfv does not list", x.origin, uri)
		}
	case "vsock":
		cid, port, ok := strings.Cut(rest, ":")
		if !ok {
			return errors.New("vsock: want vsock:CID:PORT")
		}
		s.Sockets = appendNew(s.Sockets, Socket{Family: FamilyVsock, Type: Stream, Address: cid + ":" + port, Op: OpConnect, Option: x.origin + " vsock:"})
	default:
		return fmt.Errorf("uri %q: unknown migration protocol", uri)
	}
	return nil
}

// monitorPathLike reports whether a monitor command's argument looks like
// a file name: a path, or a URI that names one (file:, unix:, exec:).
func monitorPathLike(v string) bool {
	return strings.HasPrefix(v, "/") || strings.HasPrefix(v, "./") || strings.HasPrefix(v, "../") ||
		strings.HasPrefix(v, "file:") || strings.HasPrefix(v, "unix:") || strings.HasPrefix(v, "exec:")
}

// maxArgsDepth bounds the nesting scan follows: QEMU's JSON parser
// refuses deeper input (MAX_NESTING 1024), so such a command never runs.
const maxArgsDepth = 1024

// scan warns about string arguments of an unknown command that look like
// paths: kfv does not know what QEMU does with them.
func (x *extractor) scan(a map[string]json.RawMessage, prefix string, depth int) {
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		x.scanValue(a[k], prefix+k, depth+1)
	}
}

func (x *extractor) scanValue(v json.RawMessage, key string, depth int) {
	if depth > maxArgsDepth {
		return
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		if monitorPathLike(s) {
			x.warnf("%s %s=%s: looks like a path, but kfv does not know what QEMU does with it; not in the set", x.origin, key, s)
		}
		return
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(v, &m) == nil {
		x.scan(m, key+".", depth+1)
		return
	}
	var l []json.RawMessage
	if json.Unmarshal(v, &l) == nil {
		for i, e := range l {
			x.scanValue(e, fmt.Sprintf("%s.%d", key, i), depth+1)
		}
	}
}
