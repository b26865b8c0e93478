package resources

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
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
		len(s.FDs) == 0 && len(s.TapNames) == 0 && !s.NetUser && !s.IOUring && len(n.Exec) == 0
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
	// err is the first argument of the wrong type that str, obj or
	// boolean met. Reads after it give zero values, and done returns it:
	// a handler reads all it needs, then acts, without a check per read
	// (as bufio.Scanner keeps its error).
	err error
}

// done returns the command's error: a malformed argument read earlier
// wins over what a handler made of the zero value read in its place, as
// QEMU would have refused the arguments first.
func (x *extractor) done(err error) error {
	if x.err != nil {
		return x.err
	}
	return err
}

// member returns a's member k, absent when it is missing or null.
func member(a map[string]json.RawMessage, k string) (json.RawMessage, bool) {
	v, ok := a[k]
	return v, ok && string(v) != "null"
}

// str returns a string member, "" when absent; a member of another type
// is an error.
func str(a map[string]json.RawMessage, k string) (string, error) {
	var s string
	if v, ok := member(a, k); ok && json.Unmarshal(v, &s) != nil {
		return "", fmt.Errorf("%s: want a string", k)
	}
	return s, nil
}

// str is the string member k of a, "" when absent (see extractor.err).
func (x *extractor) str(a map[string]json.RawMessage, k string) string {
	s, err := str(a, k)
	x.fail(err)
	return s
}

// obj is the object member k of a, nil when absent (see extractor.err).
func (x *extractor) obj(a map[string]json.RawMessage, k string) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if v, ok := member(a, k); ok && json.Unmarshal(v, &m) != nil {
		x.fail(fmt.Errorf("%s: want an object", k))
		return nil
	}
	return m
}

// boolean is the boolean member k of a, false when absent; prefix names
// a in messages (see extractor.err).
func (x *extractor) boolean(a map[string]json.RawMessage, k, prefix string) bool {
	var b bool
	if v, ok := a[k]; ok && json.Unmarshal(v, &b) != nil {
		x.fail(errors.New(prefix + k + ": want a boolean"))
	}
	return b
}

// fail keeps err when it is the first.
func (x *extractor) fail(err error) {
	if x.err == nil {
		x.err = err
	}
}

// qmp adds what the QMP command cmd, with arguments raw (decoded: a),
// names on the host.
func (x *extractor) qmp(cmd string, raw json.RawMessage, a map[string]json.RawMessage) error {
	return x.done(x.command(cmd, raw, a))
}

// newImageKeys are the commands that write an image, by the argument that
// names it.
var newImageKeys = map[string]string{"drive-mirror": "target", "drive-backup": "target", "blockdev-snapshot-sync": "snapshot-file"}

// asOption are the commands whose arguments are those of an option.
var asOption = map[string]string{"blockdev-add": "-blockdev", "netdev_add": "-netdev", "device_add": "-device", "object-add": "-object"}

// command is qmp before the first malformed argument is taken into account.
func (x *extractor) command(cmd string, raw json.RawMessage, a map[string]json.RawMessage) error {
	if opt, ok := asOption[cmd]; ok {
		return x.option(opt, string(raw))
	}
	if key, ok := newImageKeys[cmd]; ok {
		x.newImage(x.str(a, key), x.str(a, "mode"), key+"=")
		return nil
	}
	switch cmd {
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
		return x.medium(x.str(a, "filename"), x.str(a, "format"), x.str(a, "read-only-mode"))
	case "change":
		dev, target, format := x.str(a, "device"), x.str(a, "target"), x.str(a, "arg")
		if dev == "vnc" {
			return nil // target is "password"
		}
		return x.medium(target, format, "")
	case "blockdev-create":
		o := x.obj(a, "options")
		if drv, _ := str(o, "driver"); drv == "file" {
			x.image(x.str(o, "filename"), Create, "options.filename=")
		}
	case "chardev-add", "chardev-change":
		return x.chardev(a)
	case "migrate":
		return x.migrateArgs(a, false)
	case "migrate-incoming":
		return x.migrateArgs(a, true)
	case "screendump", "pmemsave", "memsave", "dump-skeys":
		x.file(x.str(a, "filename"), Create, "filename=")
	case "dump-guest-memory":
		proto := x.str(a, "protocol")
		if p, ok := strings.CutPrefix(proto, "file:"); ok {
			x.file(p, Create, "protocol=file:")
		} else if !strings.HasPrefix(proto, "fd:") {
			return fmt.Errorf("protocol %q: want file:PATH or fd:NAME", proto)
		}
	case "nbd-server-start":
		return x.socketAddressType(x.obj(a, "addr"), true, OpBind, Stream, "addr.")
	case "human-monitor-command":
		line := x.str(a, "command-line")
		x.origin = "HMP"
		return x.hmp(line)
	default:
		x.scan(a, "", 0)
	}
	return nil
}

// option derives the resources of one command-line option with value v,
// as if QEMU had been started with it: the QMP arguments of blockdev-add,
// netdev_add, device_add and object-add are what -blockdev, -netdev,
// -device and -object take as JSON.
func (x *extractor) option(name, v string) error {
	if x.err != nil {
		return x.err // the arguments are refused; read no host file for them
	}
	// -nodefaults and -accel keep the derivation from adding what a whole
	// VM has (QEMU's default NIC, the accelerator's device).
	toks, err := tokenize([]string{"-nodefaults", "-accel", "tcg", name, v})
	if err != nil {
		return err
	}
	// What the set says its resources came from is the command, which
	// is what the operator sent, not the option it stands for.
	toks[len(toks)-1].origin = x.origin
	// A monitor command does not carry QEMU's environment: a drive added
	// with snapshot=on gets its overlay where QEMU puts it without TMPDIR.
	set, err := derive(toks, x.cwd, overlayDir("", false, x.cwd), x.fsys)
	if err != nil {
		return err
	}
	set.Warnings = slices.DeleteFunc(set.Warnings, func(w string) bool { return strings.Contains(w, fdNameWarning) })
	x.n.Set.Merge(set)
	return nil
}

// file adds a plain file name (no protocol prefix).
func (x *extractor) file(p string, a Access, key string) {
	if p == "" {
		return
	}
	x.n.Set.addFile(File{Path: p, Abs: absPath(p, x.cwd), Access: a, Option: x.origin + " " + key})
}

// image adds an image file QEMU's block layer opens or creates (a plain
// file name).
func (x *extractor) image(p string, a Access, key string) {
	if p == "" {
		return
	}
	x.n.Set.addFile(File{Path: p, Abs: absPath(p, x.cwd), Access: a, Image: true, Option: x.origin + " " + key})
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
	x.image(p, a, key)
}

// chardev adds the backend of chardev-add and chardev-change, turned into
// the -chardev options that mean the same.
func (x *extractor) chardev(a map[string]json.RawMessage) error {
	id := x.str(a, "id")
	b := x.obj(a, "backend")
	typ := x.str(b, "type")
	data := x.obj(b, "data")
	opts := []string{typ, "id=" + EscapeOpt(id)}
	add := func(k, jsonKey string) {
		if v := x.str(data, jsonKey); v != "" {
			opts = append(opts, k+"="+EscapeOpt(v))
		}
	}
	add("logfile", "logfile")
	switch typ {
	case "file":
		add("path", "out")
		add("input-path", "in")
	case "serial", "parallel", "pipe":
		add("path", "device")
	case "socket":
		addr := x.obj(data, "addr")
		op := OpConnect
		if x.boolean(data, "server", "backend.data.") {
			op = OpBind
		}
		x.origin += " " + id
		return x.socketAddressType(addr, true, op, Stream, "backend.data.addr.")
	case "udp":
		remote, local := x.obj(data, "remote"), x.obj(data, "local")
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
	kind := x.str(a, "type")
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
		p := x.str(a, "path")
		if p == "" {
			return errors.New(key + "path: empty unix socket path")
		}
		addr := absPath(p, x.cwd)
		if x.boolean(a, "abstract", key) {
			addr = "@" + p
		}
		s.addUnix(addr, typ, op, origin+"path=")
	case "inet":
		host, port := x.str(a, "host"), x.str(a, "port")
		if to, ok := a["to"]; ok {
			port += "-" + strings.Trim(string(to), `"`)
		}
		s.addInet(host, port, typ, op, origin+"host=,port=")
	case "vsock":
		s.addVsock(x.str(a, "cid"), x.str(a, "port"), typ, op, origin+"cid=,port=")
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
	if uri := x.str(a, "uri"); uri != "" {
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
	op, acc := OpConnect, Create
	if incoming {
		op, acc = OpBind, ReadOnly
	}
	switch transport := x.str(a, "transport"); transport {
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
		x.file(x.str(a, "filename"), acc, "channels.addr.filename=")
	case "rdma":
		x.n.Set.warnf("%s: RDMA migration uses verbs devices (/dev/infiniband) kfv does not list", x.origin)
		x.n.Set.addInet(x.str(a, "host"), x.str(a, "port"), Stream, op, x.origin+" channels.addr rdma")
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
		s.addUnix(absPath(rest, x.cwd), Stream, OpConnect, x.origin+" unix:")
	case "file":
		// QEMU 8.2 and later: file:PATH[,offset=N].
		p, _, _ := strings.Cut(rest, ",")
		x.file(p, Create, "file:")
	case "tcp", "rdma":
		hp, _, _ := strings.Cut(rest, ",")
		host, port, err := SplitHostPort(hp)
		if err != nil {
			return err
		}
		s.addInet(host, port, Stream, OpConnect, x.origin+" "+proto+":")
		if proto == "rdma" {
			s.warnf("%s %s: RDMA migration uses verbs devices (/dev/infiniband) kfv does not list", x.origin, uri)
		}
	case "vsock":
		cid, port, ok := strings.Cut(rest, ":")
		if !ok {
			return errors.New("vsock: want vsock:CID:PORT")
		}
		s.addVsock(cid, port, Stream, OpConnect, x.origin+" vsock:")
	default:
		return fmt.Errorf("uri %q: unknown migration protocol", uri)
	}
	return nil
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
		if pathLike(s, monitorPathPrefixes) {
			x.n.Set.warnf("%s %s=%s: looks like a path, but kfv does not know what QEMU does with it; not in the set", x.origin, key, s)
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
