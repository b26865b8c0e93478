package resources

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// OptionError is bad input on QEMU's command line: an option neither
// QEMU 7.2 nor 10.0 knows, a missing argument, or a value QEMU would
// reject.
type OptionError struct {
	// Option is the option as written ("-drive"), or the argument.
	Option string
	// Value is the option's argument ("" for options without one).
	Value string
	Err   error
}

func (e *OptionError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %v", e.Option, e.Err)
	}
	return fmt.Sprintf("%s %s: %v", e.Option, e.Value, e.Err)
}

func (e *OptionError) Unwrap() error { return e.Err }

// hasArg lists the options of qemu-system-x86_64 7.2 and 10.0: true when
// the option takes an argument. Checked against both binaries: an option
// missing here is one both reject as invalid. An option only one of them
// has is here too (kfv derives from the line before QEMU runs, whichever
// QEMU it is); the QEMU that lacks it refuses the line itself. 10.0 no
// longer has -audio-help, -portrait, -rotate, -no-acpi, -no-hpet,
// -singlestep, -async-teardown, -chroot and -runas (the last three are
// -run-with's keys), and added -run-with, -shim, -perfmap and -jitdump.
var hasArg = map[string]bool{
	// Without an argument.
	"mem-prealloc": false, "audio-help": false, "snapshot": false, "usb": false,
	"nographic": false, "portrait": false, "full-screen": false, "win2k-hack": false,
	"no-fd-bootchk": false, "no-acpi": false, "no-hpet": false, "singlestep": false,
	"preconfig": false, "S": false, "s": false, "enable-kvm": false, "xen-attach": false,
	"xen-domid-restrict": false, "no-reboot": false, "no-shutdown": false,
	"daemonize": false, "only-migratable": false, "nodefaults": false,
	"no-user-config": false, "async-teardown": false, "enable-sync-profile": false,
	"semihosting": false, "old-param": false, "h": false, "help": false, "version": false,
	// With one.
	"machine": true, "M": true, "cpu": true, "accel": true, "smp": true, "numa": true,
	"add-fd": true, "set": true, "global": true, "boot": true, "m": true, "mem-path": true,
	"k": true, "audio": true, "audiodev": true, "device": true, "name": true, "uuid": true,
	"fda": true, "fdb": true, "hda": true, "hdb": true, "hdc": true, "hdd": true,
	"cdrom": true, "blockdev": true, "drive": true, "mtdblock": true, "sd": true,
	"fsdev": true, "virtfs": true, "iscsi": true, "usbdevice": true, "display": true,
	"spice": true, "rotate": true, "vga": true, "vnc": true, "acpitable": true,
	"smbios": true, "netdev": true, "nic": true, "net": true, "chardev": true,
	"tpmdev": true, "bios": true, "pflash": true, "kernel": true, "append": true,
	"initrd": true, "dtb": true, "compat": true, "fw_cfg": true, "serial": true,
	"parallel": true, "monitor": true, "qmp": true, "qmp-pretty": true, "mon": true,
	"debugcon": true, "pidfile": true, "overcommit": true, "gdb": true, "d": true,
	"D": true, "dfilter": true, "seed": true, "L": true, "xen-domid": true,
	"action": true, "loadvm": true, "option-rom": true, "rtc": true, "icount": true,
	"watchdog-action": true, "echr": true, "incoming": true, "chroot": true,
	"runas": true, "sandbox": true, "readconfig": true, "trace": true, "plugin": true,
	"msg": true, "dump-vmstate": true, "object": true, "semihosting-config": true,
	"g": true, "prom-env": true,
	// QEMU 10.0's.
	"perfmap": false, "jitdump": false, "run-with": true, "shim": true,
}

// IsFlag reports whether name (an option without its dashes) is one of
// QEMU's options that take no argument (7.2's or 10.0's). A walk over QEMU's arguments
// that does not check them must take every other option to have one.
func IsFlag(name string) bool {
	takes, known := hasArg[name]
	return known && !takes
}

// token is one option with its argument.
type token struct {
	name  string // without dashes
	arg   string // as written, for messages
	value string
	hasV  bool
	// origin is where the set says the option's resources came from:
	// "-NAME", or the monitor command that stands for the option.
	origin string
}

// tokenize splits QEMU's arguments (without argv[0]) into options as
// QEMU's lookup_opt does: "--opt" is "-opt", an option with an argument
// takes the next one whatever it looks like, and an argument that does
// not start with "-" is a disk image (-hda).
func tokenize(args []string) ([]token, error) {
	var out []token
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			out = append(out, token{name: "hda", arg: a, value: a, hasV: true, origin: "-hda"})
			continue
		}
		name := strings.TrimPrefix(a[1:], "-")
		takes, ok := hasArg[name]
		if !ok {
			if k, _, cut := strings.Cut(name, "="); cut {
				if _, known := hasArg[k]; known {
					return nil, &OptionError{Option: a, Err: fmt.Errorf("invalid option: QEMU takes \"-%s VALUE\", not \"-%s=VALUE\"", k, k)}
				}
			}
			return nil, &OptionError{Option: a, Err: errors.New("invalid option (an option of neither QEMU 7.2 nor 10.0)")}
		}
		t := token{name: name, arg: a, origin: "-" + name}
		if takes {
			if i+1 >= len(args) {
				return nil, &OptionError{Option: a, Err: errors.New("requires an argument")}
			}
			i++
			t.value, t.hasV = args[i], true
		}
		out = append(out, t)
	}
	return out, nil
}

// deriver holds the state of one derivation.
type deriver struct {
	s    *Set
	cwd  string
	fsys fs.FS

	snapshot   bool   // -snapshot
	tmpdir     string // where QEMU creates snapshot overlays (overlayDir)
	nodefaults bool
	hasNet     bool
	accels     []string
	readconfig int // nesting, bounded
	cpuDevices int // -device X-x86_64-cpu: vCPUs beyond -smp's at start

	nodes   map[string]string // block node-name → absolute file name
	pending []pendingChain    // qcow2 nodes whose file is another node
}

// pendingChain is a format node whose file child is a node reference,
// resolved once every -blockdev is known.
type pendingChain struct {
	ref, origin string
	access      Access
}

// FromArgs derives the resource set of QEMU run with args (its arguments
// without argv[0]) in the working directory cwd. fsys is the host's file
// system rooted at "/" (HostFS); it is read for qcow2 headers (backing
// chains), -readconfig files, whether a relative name exists under cwd,
// and whether a memory backend path is a directory. A nil fsys reads
// nothing and says so in Warnings.
//
// An *OptionError is returned for input QEMU would reject: an unknown
// option, a missing argument, malformed option syntax or JSON.
//
// FromArgs takes QEMU's environment to be without TMPDIR; FromArgsEnv
// takes the environment QEMU runs with.
func FromArgs(args []string, cwd string, fsys fs.FS) (*Set, error) {
	return FromArgsEnv(args, cwd, nil, fsys)
}

// FromArgsEnv is FromArgs for a QEMU started with the environment env
// ("KEY=VALUE" strings): its TMPDIR says where the temporary overlays of
// snapshot=on drives are created.
func FromArgsEnv(args []string, cwd string, env []string, fsys fs.FS) (*Set, error) {
	if !filepath.IsAbs(cwd) {
		return nil, fmt.Errorf("derive resources: working directory %q is not absolute", cwd)
	}
	toks, err := tokenize(args)
	if err != nil {
		return nil, err
	}
	tmpdir, set := "", false
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "TMPDIR="); ok {
			tmpdir, set = v, true // the first one, as QEMU's getenv finds it
			break
		}
	}
	return derive(toks, cwd, overlayDir(tmpdir, set, filepath.Clean(cwd)), fsys)
}

// derive is FromArgs on options already tokenized; tmpdir is where QEMU
// creates snapshot overlays.
func derive(toks []token, cwd, tmpdir string, fsys fs.FS) (*Set, error) {
	d := &deriver{s: &Set{}, cwd: filepath.Clean(cwd), tmpdir: tmpdir, fsys: fsys, nodes: map[string]string{}}
	for _, t := range toks {
		switch t.name {
		case "snapshot":
			d.snapshot = true
		case "nodefaults":
			d.nodefaults = true
		}
	}
	for _, t := range toks {
		if err := d.option(t); err != nil {
			var oe *OptionError
			if errors.As(err, &oe) {
				return nil, err
			}
			return nil, &OptionError{Option: t.arg, Value: t.value, Err: err}
		}
	}
	d.finish()
	return d.s, nil
}

// keyValue is how an option in QEMU's key=value syntax is read, and what
// is done with what it holds.
type keyValue struct {
	implied string // the key of a bare first element; "" for none
	json    bool   // a value that starts with "{" is JSON
	// lenient options are QEMU's to check: when the value does not parse,
	// it names nothing kfv would follow.
	lenient bool
	handle  func(d *deriver, o *opts, origin string) error
}

// keyValueOptions are the options whose value is key=value (or JSON).
// What the others take is a name, a display or a URI (see option).
var keyValueOptions = map[string]keyValue{
	"drive":      {handle: (*deriver).drive},
	"blockdev":   {implied: "driver", json: true, handle: (*deriver).blockdev},
	"option-rom": {implied: "romfile", handle: (*deriver).optionROM},
	"chardev":    {implied: "backend", handle: (*deriver).chardev},
	"netdev":     {implied: "type", json: true, handle: (*deriver).netdevOption},
	"nic":        {implied: "type", handle: (*deriver).nicOption},
	"net":        {implied: "type", handle: (*deriver).nicOption},
	"device":     {implied: "driver", json: true, handle: noError((*deriver).device)},
	"object":     {implied: "qom-type", json: true, handle: noError((*deriver).object)},
	"fsdev":      {implied: "fsdriver", handle: noError((*deriver).fsdev)},
	"virtfs":     {implied: "fsdriver", handle: noError((*deriver).fsdev)},
	"name":       {implied: "guest", handle: (*deriver).name},
	"machine":    {implied: "type", handle: noError((*deriver).machine)},
	"M":          {implied: "type", handle: noError((*deriver).machine)},
	"accel":      {implied: "accel", handle: (*deriver).accel},
	"smp":        {implied: "cpus", handle: (*deriver).smp},
	"add-fd":     {handle: (*deriver).addFD},
	"fw_cfg":     {implied: "name", handle: (*deriver).fwCfg},
	"acpitable":  {handle: (*deriver).acpiTable},
	"smbios":     {handle: files(fileKey{"file", ReadOnly}, fileKey{"path", ReadOnly})},
	"boot":       {implied: "order", handle: files(fileKey{"splash", ReadOnly})},
	"trace":      {implied: "enable", handle: files(fileKey{"events", ReadOnly}, fileKey{"file", Create})},
	"plugin":     {implied: "file", handle: (*deriver).plugin},
	"icount":     {implied: "shift", handle: (*deriver).icount},
	"spice":      {handle: noError((*deriver).spice)},
	"display":    {implied: "type", handle: (*deriver).display},
	"audiodev":   {implied: "driver", json: true, handle: noError((*deriver).audiodev)},
	"audio":      {implied: "driver", handle: noError((*deriver).audiodev)},
	"tpmdev":     {implied: "type", handle: noError((*deriver).tpmdev)},
	"run-with":   {handle: noError((*deriver).runWith)},
}

func init() {
	// No resources of their own (they name other options' ids); anything
	// path-like is reported.
	for _, name := range []string{"numa", "semihosting-config", "mon", "usbdevice", "iscsi", "sandbox",
		"overcommit", "compat", "rtc", "msg", "action", "m", "audio-help"} {
		keyValueOptions[name] = keyValue{lenient: true, handle: (*deriver).leftoversOnly}
	}
}

// noError adapts a handler that cannot fail.
func noError(h func(*deriver, *opts, string)) func(*deriver, *opts, string) error {
	return func(d *deriver, o *opts, origin string) error {
		h(d, o, origin)
		return nil
	}
}

// fileKey is a key whose value is a file QEMU opens with access.
type fileKey struct {
	key    string
	access Access
}

// files handles an option that names nothing on the host but the files
// under keys.
func files(keys ...fileKey) func(*deriver, *opts, string) error {
	return func(d *deriver, o *opts, origin string) error {
		for _, k := range keys {
			d.file(o.str(k.key), k.access, origin+" "+k.key+"=")
		}
		d.leftovers(o, origin)
		return nil
	}
}

// option handles one option.
func (d *deriver) option(t token) error {
	origin := t.origin
	v := t.value
	if kv, ok := keyValueOptions[t.name]; ok {
		o, err := parseOpts(v, kv.implied, kv.json)
		if err != nil {
			if kv.lenient {
				return nil
			}
			return err
		}
		return kv.handle(d, o, origin)
	}
	switch t.name {
	case "hda", "hdb", "hdc", "hdd", "fda", "fdb", "cdrom", "mtdblock", "sd", "pflash":
		// QEMU takes the whole value as the file name, commas and all.
		ro := t.name == "cdrom"
		return d.image(v, ro, d.snapshot, "", origin, false)
	case "kernel", "dtb":
		d.file(v, ReadOnly, origin)
	case "initrd":
		d.initrd(v, origin)
	case "bios":
		d.dataFile(v, origin)
	case "serial", "parallel", "monitor", "qmp", "qmp-pretty", "debugcon":
		return d.chardevShort(v, origin)
	case "gdb":
		if strings.HasPrefix(v, "tcp:") {
			v += ",server=on" // gdbserver_start forces a listening socket
		}
		return d.chardevShort(v, origin)
	case "s":
		return d.chardevShort("tcp::1234,server=on", "-s (-gdb tcp::1234)")
	case "mem-path":
		d.memPath(v, false, origin)
	case "incoming":
		return d.incoming(v, origin)
	case "loadvm":
		d.s.LoadVM = v
	case "readconfig":
		return d.readConfig(v, origin)
	case "pidfile", "D", "dump-vmstate":
		d.file(v, Create, origin)
	case "L":
		if v != "help" {
			d.dir(v, ReadOnly, origin)
		}
	case "daemonize":
		d.s.Daemonize = true
	case "chroot":
		d.s.warnf("-chroot %s: after start-up QEMU resolves paths inside %s, not as listed here", v, v)
	case "async-teardown":
		d.s.warnf("-async-teardown: QEMU starts a process at start-up to tear its memory down after it exits; kfv refuses processes (rule no-fork), so QEMU runs without it")
	case "runas":
		d.s.warnf("-runas %s: QEMU changes its user after start-up; files it opens later are checked with that user's rights too", v)
		d.userLookup(v, origin)
	case "shim":
		// QEMU 10.0: an EFI shim loaded with -kernel (machine property
		// shim, read as given, not from the data directories).
		d.file(v, ReadOnly, origin)
	case "perfmap":
		d.perfmap(origin)
	case "jitdump":
		// Not derived: QEMU maps the dump file it writes executable, as
		// perf's marker, and such a mapping could hold any code.
		d.s.warnf("-jitdump: QEMU creates jit-PID.dump and maps it executable as perf's marker; kfv admits neither (the file's content is QEMU's own to write, so an executable mapping of it could be any code): its open is denied and QEMU proceeds without jitdump; -perfmap works")
	case "enable-kvm":
		d.addAccels("kvm")
	case "vnc":
		return d.vnc(v, origin)
	case "set", "global":
		// These change properties of other options (-set drive.d0.file=…,
		// -global driver.prop=…); a path set this way is not followed.
		if _, val, ok := strings.Cut(v, "="); ok && pathLike(val, optionPathPrefixes) {
			d.s.warnf("%s %s: sets a property to what looks like a path; not in the set", origin, v)
		}
		if strings.HasPrefix(v, "driver=") {
			o, err := parseOpts(v, "", false)
			if err != nil {
				return err
			}
			if pathLike(o.str("value"), optionPathPrefixes) {
				d.s.warnf("%s %s: sets a property to what looks like a path; not in the set", origin, v)
			}
		}
	default:
		// Flags and options that name no host resource: -cpu, -uuid, -k,
		// -append (the guest's command line), -vga, -d, -seed, -echr….
	}
	return nil
}

// runWith handles QEMU 10.0's -run-with, which took over -chroot, -runas
// and -async-teardown: it names no file (user= is a user, chroot= the
// directory QEMU moves into), but both change how QEMU's later paths and
// rights are to be read.
func (d *deriver) runWith(o *opts, origin string) {
	if v := o.str("chroot"); v != "" {
		d.s.warnf("%s chroot=%s: after start-up QEMU resolves paths inside %s, not as listed here", origin, v, v)
	}
	if v := o.str("user"); v != "" {
		d.s.warnf("%s user=%s: QEMU changes its user after start-up; files it opens later are checked with that user's rights too", origin, v)
		d.userLookup(v, origin+" user=")
	}
	if on, err := o.boolean("async-teardown", false); err == nil && on {
		d.s.warnf("%s async-teardown=on: QEMU starts a process at start-up to tear its memory down after it exits; kfv refuses processes (rule no-fork), so QEMU runs without it", origin)
	}
	d.leftovers(o, origin)
}

// userLookup adds what glibc reads to look the user of -runas or
// -run-with user= up (getpwnam, then initgroups for its groups, even for
// a UID:GID, measured on QEMU 7.2 and 10.0): the name service switch's
// configuration and the files it names on Debian, the most groups a
// process may have (initgroups' sysconf), and the name service cache
// daemon's socket, which glibc asks first when it runs.
func (d *deriver) userLookup(user, origin string) {
	d.s.RunAs = user
	for _, f := range []string{"/etc/nsswitch.conf", "/etc/passwd", "/etc/group", "/proc/sys/kernel/ngroups_max"} {
		d.file(f, ReadOnly, origin)
	}
	for _, sock := range []string{"/run/nscd/socket", "/var/run/nscd/socket"} {
		d.s.addUnix(sock, Stream, OpConnect, origin)
	}
}

// perfmap handles QEMU 10.0's -perfmap: TCG writes the symbols of the
// code it translates to /tmp/perf-PID.map, for perf. PID is QEMU's, known
// only once it runs, so the file is a pattern of that shape alone.
func (d *deriver) perfmap(origin string) {
	d.s.addFile(File{Path: "/tmp/perf-PID.map", Abs: "/tmp/perf-[0-9]*.map", Pattern: true, Access: Create, Option: origin})
}

// blockdev handles -blockdev, a block node at the top of its tree.
func (d *deriver) blockdev(o *opts, origin string) error {
	d.blockNode(o, origin, false, true)
	return nil
}

// optionROM handles -option-rom, a file in QEMU's data directories.
func (d *deriver) optionROM(o *opts, origin string) error {
	d.dataFile(o.str("romfile"), origin+" romfile=")
	d.leftovers(o, origin)
	return nil
}

// netdevOption handles -netdev.
func (d *deriver) netdevOption(o *opts, origin string) error {
	d.hasNet = true
	return d.netdev(o, origin)
}

// nicOption handles -nic and -net: a network backend, or for -net nic a
// guest NIC, which names nothing on the host.
func (d *deriver) nicOption(o *opts, origin string) error {
	d.hasNet = true
	if o.str("type") == "nic" {
		d.leftovers(o, origin)
		return nil
	}
	return d.netdev(o, origin)
}

// name handles -name.
func (d *deriver) name(o *opts, _ string) error {
	d.s.Name = o.str("guest")
	return nil
}

// accel handles -accel.
func (d *deriver) accel(o *opts, _ string) error {
	d.addAccels(o.str("accel"))
	return nil
}

// smpKeys are -smp's keys: the vCPUs at start and the most there can be,
// and the topology whose product bounds them.
var smpKeys = []string{"cpus", "maxcpus", "drawers", "books", "sockets", "dies", "clusters", "modules", "cores", "threads"}

// smp handles -smp: the vCPUs the VM starts with (VCPUs: cpus, else
// maxcpus, else the topology's product, as QEMU reads it) and the most
// it can have (MaxVCPUs). QEMU's own arithmetic (maxcpus, or cpus, or
// the topology's product, with the missing levels filled in) never
// exceeds the largest of maxcpus, cpus and the product of the levels
// given, which is the bound kfv keeps.
func (d *deriver) smp(o *opts, origin string) error {
	product, most, cpus, maxcpus := 1, 0, 0, 0
	for _, k := range smpKeys {
		v, ok := o.get(k)
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n > maxVCPUs {
			return fmt.Errorf("%s=%s: want a number of CPUs (at most %d)", k, v, maxVCPUs)
		}
		switch k {
		case "cpus", "maxcpus":
			most = max(most, int(n))
			if k == "cpus" {
				cpus = int(n)
			} else {
				maxcpus = int(n)
			}
		default:
			if n > 0 {
				product = min(product*int(n), maxVCPUs)
			}
		}
	}
	d.s.MaxVCPUs = max(d.s.MaxVCPUs, most, product)
	switch boot := cpus; {
	case boot > 0:
		d.s.VCPUs = max(d.s.VCPUs, boot)
	case maxcpus > 0:
		d.s.VCPUs = max(d.s.VCPUs, maxcpus)
	default:
		d.s.VCPUs = max(d.s.VCPUs, product)
	}
	d.leftovers(o, origin)
	return nil
}

// maxVCPUs bounds a -smp value: KVM's limit on x86 (KVM_MAX_VCPUS is
// 1024 on Debian's kernels, 4096 with CONFIG_MAXSMP).
const maxVCPUs = 4096

// addFD handles -add-fd: an inherited fd put in an fd set.
func (d *deriver) addFD(o *opts, _ string) error {
	fd := o.str("fd")
	n, err := strconv.Atoi(fd)
	if err != nil || n < 0 {
		return fmt.Errorf("fd=%s: want a file descriptor number", fd)
	}
	d.s.addFD(n, fmt.Sprintf("-add-fd (set=%s)", o.str("set")))
	return nil
}

// fwCfg handles -fw_cfg: a file passed to the guest under a name.
func (d *deriver) fwCfg(o *opts, origin string) error {
	d.file(o.str("file"), ReadOnly, origin+" file= (name="+o.str("name")+")")
	d.leftovers(o, origin)
	return nil
}

// acpiTable handles -acpitable: file= and data= are ":"-separated lists.
func (d *deriver) acpiTable(o *opts, origin string) error {
	for _, k := range []string{"file", "data"} {
		for _, val := range o.all(k) {
			for _, p := range strings.Split(val, ":") {
				d.file(p, ReadOnly, origin+" "+k+"=")
			}
		}
	}
	d.leftovers(o, origin)
	return nil
}

// plugin handles -plugin, a shared object QEMU loads.
func (d *deriver) plugin(o *opts, origin string) error {
	d.file(o.str("file"), ReadOnly, origin+" file=")
	d.s.warnf("-plugin %s: loads and runs a shared object inside QEMU", o.str("file"))
	d.leftovers(o, origin)
	return nil
}

// icount handles -icount: record and replay write and read rrfile=.
func (d *deriver) icount(o *opts, origin string) error {
	switch o.str("rr") {
	case "record":
		d.file(o.str("rrfile"), Create, origin+" rrfile=")
	case "replay":
		d.file(o.str("rrfile"), ReadOnly, origin+" rrfile=")
	}
	d.leftovers(o, origin)
	return nil
}

// leftoversOnly handles an option that names no resource of its own.
func (d *deriver) leftoversOnly(o *opts, origin string) error {
	d.leftovers(o, origin)
	return nil
}

// addAccels records accelerators from a ":"-separated list.
func (d *deriver) addAccels(list string) {
	for _, a := range strings.Split(list, ":") {
		if a != "" && !contains(d.accels, a) {
			d.accels = append(d.accels, a)
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// finish adds what follows from the whole command line.
func (d *deriver) finish() {
	for _, p := range d.pending {
		abs, ok := d.nodes[p.ref]
		if !ok {
			d.s.warnf("%s: file=%s names a node not defined on the command line; its backing chain is not in the set", p.origin, p.ref)
			continue
		}
		d.chain(abs, p.origin, p.access)
	}
	if len(d.accels) == 0 {
		// QEMU 7.2 without -accel, -machine accel= or -enable-kvm.
		d.accels = []string{"tcg", "kvm"}
	}
	d.s.Accels = d.accels
	if d.s.MaxVCPUs == 0 {
		d.s.MaxVCPUs = 1 // QEMU's default: -smp 1
	}
	d.s.VCPUs = min(max(d.s.VCPUs, 1)+d.cpuDevices, d.s.MaxVCPUs)
	if contains(d.accels, "kvm") {
		d.s.addDevice(Device{Path: "/dev/kvm", Access: ReadWrite, Option: "accelerator kvm"})
	}
	if !d.hasNet && !d.nodefaults {
		d.s.NetUser = true
		d.s.Warnings = append(d.s.Warnings, "no -nic, -net or -netdev and no -nodefaults: QEMU adds a NIC on user-mode networking (slirp); give -nic none to have no network")
	}
}

// What a value that looks like a file name starts with, for the warnings
// about values kfv does not follow: a path, and on the command line "~/"
// too (no shell expands it inside an option value, QEMU takes it as
// written), in monitor commands the URIs that carry a path where the
// command line has options (file:, unix:, exec:).
var (
	optionPathPrefixes  = []string{"/", "./", "../", "~/"}
	monitorPathPrefixes = []string{"/", "./", "../", "file:", "unix:", "exec:"}
)

// pathLike reports whether v starts with one of prefixes.
func pathLike(v string, prefixes []string) bool {
	return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(v, p) })
}

// leftovers warns about values nothing understood that look like paths.
func (d *deriver) leftovers(o *opts, origin string) {
	for _, kv := range o.unused() {
		if pathLike(kv[1], optionPathPrefixes) {
			d.s.warnf("%s %s=%s: looks like a path, but kfv does not know what QEMU does with it; not in the set", origin, kv[0], kv[1])
		}
	}
}

// file adds a file named relative to QEMU's working directory.
func (d *deriver) file(p string, a Access, origin string) {
	if p == "" {
		return
	}
	d.s.addFile(File{Path: p, Abs: absPath(p, d.cwd), Access: a, Option: origin})
}

// dataFile adds a file QEMU finds with qemu_find_file: as given when it
// is readable from the working directory, else in its data directories.
func (d *deriver) dataFile(p, origin string) {
	if p == "" {
		return
	}
	if filepath.IsAbs(p) || exists(d.fsys, absPath(p, d.cwd)) {
		d.s.addFile(File{Path: p, Abs: absPath(p, d.cwd), Access: ReadOnly, Option: origin, DataDir: true})
		return
	}
	d.s.addFile(File{Path: p, Access: ReadOnly, Option: origin, DataDir: true})
}

// dir adds a directory tree.
func (d *deriver) dir(p string, a Access, origin string) {
	if p == "" {
		return
	}
	d.s.addDir(Dir{Path: p, Abs: absPath(p, d.cwd), Access: a, Option: origin})
}

// device adds a device node.
func (d *deriver) devNode(p string, a Access, origin string) {
	if p == "" {
		return
	}
	d.s.addDevice(Device{Path: absPath(p, d.cwd), Access: a, Option: origin})
}

// fdNameWarning is part of the warning fd gives for fd names: on the
// command line they are errors, over QMP they are what getfd made, and
// FromQMP drops the warning.
const fdNameWarning = "named fds come from QMP getfd"

// fd records an fd number; a name (monitor fd names exist only over QMP)
// is reported.
func (d *deriver) fd(v, origin string) {
	if v == "" {
		return
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		d.s.warnf("%s: %q is not an fd number (%s, which the command line cannot use)", origin, v, fdNameWarning)
		return
	}
	d.s.addFD(n, origin)
}

// initrd adds -initrd: one file, or (multiboot) a comma-separated list of
// modules, each a file name followed by its arguments.
func (d *deriver) initrd(v, origin string) {
	if v == "" {
		return
	}
	if !strings.Contains(v, ",") || exists(d.fsys, absPath(v, d.cwd)) {
		d.file(v, ReadOnly, origin)
		return
	}
	for _, m := range SplitOpts(v) {
		name, _, _ := strings.Cut(strings.TrimSpace(m), " ")
		d.file(name, ReadOnly, origin+" (multiboot module)")
	}
}

// machine handles -machine's file properties and its accelerators.
func (d *deriver) machine(o *opts, origin string) {
	d.addAccels(o.str("accel"))
	d.file(o.str("kernel"), ReadOnly, origin+" kernel=")
	d.file(o.str("initrd"), ReadOnly, origin+" initrd=")
	d.file(o.str("dtb"), ReadOnly, origin+" dtb=")
	d.file(o.str("dumpdtb"), Create, origin+" dumpdtb=")
	d.dataFile(o.str("firmware"), origin+" firmware=")
	d.file(o.str("shim"), ReadOnly, origin+" shim=") // QEMU 10.0
	d.leftovers(o, origin)
}

// incoming handles -incoming URI.
func (d *deriver) incoming(v, origin string) error {
	switch {
	case v == "defer":
	case strings.HasPrefix(v, "exec:"):
		d.s.warnf("%s %s: QEMU runs a shell command to receive the migration stream; the profile denies exec", origin, v)
	case strings.HasPrefix(v, "fd:"):
		d.fd(v[3:], origin+" fd:")
	case strings.HasPrefix(v, "unix:"):
		d.s.addUnix(absPath(v[5:], d.cwd), Stream, OpBind, origin+" unix:")
	case strings.HasPrefix(v, "file:"):
		// QEMU 8.2 and later read a migration stream from a file.
		p, _, _ := strings.Cut(v[5:], ",")
		d.file(p, ReadOnly, origin+" file:")
	case strings.HasPrefix(v, "tcp:"), strings.HasPrefix(v, "rdma:"):
		proto, rest, _ := strings.Cut(v, ":")
		rest, params, _ := strings.Cut(rest, ",")
		host, port, err := SplitHostPort(rest)
		if err != nil {
			return err
		}
		o, err := parseOpts(params, "", false)
		if err != nil {
			return err
		}
		d.s.addInet(host, portRange(port, o), Stream, OpBind, origin+" "+proto+":")
		if proto == "rdma" {
			d.s.warnf("%s %s: RDMA migration uses verbs devices (/dev/infiniband) kfv does not list", origin, v)
		}
	case strings.HasPrefix(v, "vsock:"):
		cid, port, ok := strings.Cut(v[6:], ":")
		if !ok {
			return errors.New("vsock: want vsock:CID:PORT")
		}
		d.s.addVsock(cid, port, Stream, OpBind, origin+" vsock:")
	default:
		return errors.New("unknown migration protocol")
	}
	return nil
}
