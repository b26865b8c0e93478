package resources

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// device handles -device DRIVER,…: ROM files, host devices passed through
// and vhost devices. Most devices name only ids of other options.
func (d *deriver) device(o *opts, origin string) {
	drv, origin := kindOf(o, "driver", origin)
	d.dataFile(o.str("romfile"), origin+" romfile=")
	if IsCPUDevice(drv) {
		d.cpuDevices++
	}
	switch drv {
	case "vfio-pci", "vfio-pci-nohotplug", "vfio-platform", "vfio-ccw", "vfio-ap":
		d.s.addDevice(Device{Path: "/dev/vfio/vfio", Access: ReadWrite, Option: origin})
		d.s.addDevice(Device{Path: "/dev/vfio/*", Access: ReadWrite, Pattern: true, Option: origin})
		host := o.str("host")
		if p := o.str("sysfsdev"); p != "" {
			d.dir(p, ReadOnly, origin+" sysfsdev=")
			host = p
		} else if host != "" {
			d.dir("/sys/bus/pci/devices/"+host, ReadOnly, origin+" host=")
		}
		d.s.warnf("%s: the VFIO group of %s is found at run time from sysfs; the set admits every /dev/vfio group", origin, host)
	case "vhost-vsock-pci", "vhost-vsock-pci-non-transitional", "vhost-vsock-device", "vhost-vsock-ccw":
		if fd, ok := o.get("vhostfd"); ok {
			d.fd(fd, origin+" vhostfd=")
		} else {
			d.s.addDevice(Device{Path: "/dev/vhost-vsock", Access: ReadWrite, Option: origin})
		}
	case "vhost-scsi", "vhost-scsi-pci", "vhost-scsi-pci-non-transitional", "vhost-scsi-ccw":
		if fd, ok := o.get("vhostfd"); ok {
			d.fd(fd, origin+" vhostfd=")
		} else {
			d.s.addDevice(Device{Path: "/dev/vhost-scsi", Access: ReadWrite, Option: origin})
		}
	case "loader":
		d.file(o.str("file"), ReadOnly, origin+" file=")
	case "guest-loader":
		d.file(o.str("kernel"), ReadOnly, origin+" kernel=")
		d.file(o.str("initrd"), ReadOnly, origin+" initrd=")
	case "usb-host":
		d.s.addDevice(Device{Path: "/dev/bus/usb/*/*", Access: ReadWrite, Pattern: true, Option: origin})
		d.devNode(o.str("hostdevice"), ReadWrite, origin+" hostdevice=")
		d.s.warnf("%s: libusb scans /sys/bus/usb and /dev/bus/usb for the device", origin)
	case "usb-mtp":
		ro, err := o.boolean("readonly", true)
		a := ReadOnly
		if err == nil && !ro {
			a = ReadWrite
		}
		d.dir(o.str("rootdir"), a, origin+" rootdir=")
	}
	d.leftovers(o, origin)
}

// object handles -object TYPE,id=…,….
func (d *deriver) object(o *opts, origin string) {
	typ, origin := kindOf(o, "qom-type", origin)
	switch typ {
	case "memory-backend-file":
		ro, err := o.boolean("readonly", false)
		d.memPath(o.str("mem-path"), err == nil && ro, origin+" mem-path=")
	case "memory-backend-shm":
		// QEMU 10.0 (backends/hostmem-shm.c): shm_open of
		// /qemu-PID-shm-ID with O_CREAT|O_EXCL, mode 0, unlinked at once.
		// The pid is QEMU's, unknown here; O_EXCL means the name can
		// only make a new object, never open another VM's.
		if id := o.str("id"); id != "" {
			d.s.addFile(File{Path: "/dev/shm/qemu-*-shm-" + id, Abs: "/dev/shm/qemu-*-shm-" + escapeGlob(id),
				Access: Create, Option: origin + " (QEMU's POSIX shared memory object)", Pattern: true, Memory: true})
		}
	case "memory-backend-epc":
		d.s.addDevice(Device{Path: "/dev/sgx_vepc", Access: ReadWrite, Option: origin})
	case "rng-random":
		f := o.strOr("filename", "/dev/urandom")
		d.devNode(f, ReadOnly, origin+" filename=")
	case "secret":
		d.file(o.str("file"), ReadOnly, origin+" file=")
	case "tls-creds-x509", "tls-creds-psk", "tls-creds-anon":
		d.dir(o.str("dir"), ReadOnly, origin+" dir=")
	case "authz-listfile":
		d.file(o.str("filename"), ReadOnly, origin+" filename=")
	case "authz-pam":
		d.s.warnf("%s: PAM reads its configuration and loads modules kfv does not list", origin)
	case "filter-dump":
		d.file(o.str("file"), Create, origin+" file=")
	case "input-linux":
		d.devNode(o.str("evdev"), ReadWrite, origin+" evdev=")
	case "pr-manager-helper":
		d.s.addUnix(absPath(o.str("path"), d.cwd), Stream, OpConnect, origin+" path=")
	case "sev-guest":
		dev := o.strOr("sev-device", "/dev/sev")
		d.devNode(dev, ReadWrite, origin+" sev-device=")
		d.file(o.str("dh-cert-file"), ReadOnly, origin+" dh-cert-file=")
		d.file(o.str("session-file"), ReadOnly, origin+" session-file=")
	case "input-barrier":
		server := o.strOr("server", "localhost")
		port := o.strOr("port", "24800")
		d.s.addInet(server, port, Stream, OpConnect, origin)
	case "x-vfio-user-server":
		if err := d.sockAddr(o.withPrefix("socket."), Stream, OpBind, origin+" socket."); err != nil {
			d.s.warnf("%s: %v; not in the set", origin, err)
		}
	case "can-host-socketcan":
		d.s.warnf("%s: SocketCAN on host interface %s needs a raw CAN socket", origin, o.str("if"))
	case "dbus-vmstate":
		d.s.warnf("%s: connects to the D-Bus address %s; not in the set", origin, o.str("addr"))
	}
	d.leftovers(o, origin)
}

// memPath handles a memory backend file: a directory (usually a hugetlbfs
// mount) where QEMU creates and unlinks a file of its own, or a file.
func (d *deriver) memPath(p string, ro bool, origin string) {
	if p == "" {
		return
	}
	abs := absPath(p, d.cwd)
	if isDir(d.fsys, abs) {
		d.s.addDir(Dir{Path: p, Abs: abs, Access: Create, Option: origin, Memory: true})
		if d.hugetlbfs(abs) {
			d.s.addDevice(Device{Path: abs, Access: ReadWrite, Option: origin + " (hugetlbfs mount)"})
		}
		return
	}
	a := Create
	if ro {
		a = ReadOnly
	}
	d.s.addFile(File{Path: p, Abs: abs, Access: a, Option: origin, Memory: true})
}

// hugetlbfs reports whether abs is a hugetlbfs mount point, from
// /proc/self/mounts.
func (d *deriver) hugetlbfs(abs string) bool {
	if d.fsys == nil {
		return false
	}
	b, err := readSmall(d.fsys, "/proc/self/mounts", 1<<20)
	if err != nil {
		return false // not knowing only loses the device label
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 3 && f[2] == "hugetlbfs" && unescapeMount(f[1]) == abs {
			return true
		}
	}
	return false
}

// unescapeMount undoes the octal escapes of /proc/self/mounts ("\040").
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// fsdev handles -fsdev and -virtfs: a local directory tree, or the proxy
// helper's socket.
func (d *deriver) fsdev(o *opts, origin string) {
	drv, origin := kindOf(o, "fsdriver", origin)
	switch drv {
	case "local":
		// A writable share is where the guest creates files.
		ro, err := o.boolean("readonly", false)
		a := Create
		if err == nil && ro {
			a = ReadOnly
		}
		if p := o.str("path"); p != "" {
			d.s.addDir(Dir{Path: p, Abs: absPath(p, d.cwd), Access: a, Share: true, Option: origin + " path="})
		}
	case "proxy":
		if fd, ok := o.get("sock_fd"); ok {
			d.fd(fd, origin+" sock_fd=")
		} else {
			d.s.addUnix(absPath(o.str("socket"), d.cwd), Stream, OpConnect, origin+" socket=")
		}
	case "synth":
	default:
		d.s.warnf("%s: fsdev driver %s not understood; not in the set", origin, drv)
	}
	d.leftovers(o, origin)
}

// spice handles -spice: its ports, unix socket, TLS files and render node.
func (d *deriver) spice(o *opts, origin string) {
	addr := o.str("addr")
	unix, _ := o.boolean("unix", false) // a bad value fails in QEMU
	if unix {
		d.s.addUnix(absPath(addr, d.cwd), Stream, OpBind, origin+" unix=on,addr=")
	} else {
		for _, k := range []string{"port", "tls-port"} {
			if p := o.str(k); p != "" && p != "0" {
				d.s.addInet(addr, p, Stream, OpBind, origin+" "+k+"=")
			}
		}
	}
	d.dir(o.str("x509-dir"), ReadOnly, origin+" x509-dir=")
	for _, k := range []string{"x509-key-file", "x509-cert-file", "x509-cacert-file", "x509-dh-key-file"} {
		d.file(o.str(k), ReadOnly, origin+" "+k+"=")
	}
	d.devNode(o.str("rendernode"), ReadWrite, origin+" rendernode=")
	d.leftovers(o, origin)
}

// vnc handles -vnc DISPLAY,…: [HOST]:N listens on 5900+N (reverse=on
// connects to HOST:PORT instead), unix:PATH, websocket=.
func (d *deriver) vnc(v, origin string) error {
	o, err := parseOpts(v, "vnc", false)
	if err != nil {
		return err
	}
	disp := o.str("vnc")
	reverse, err := o.boolean("reverse", false)
	if err != nil {
		return err
	}
	switch {
	case disp == "none" || disp == "":
	case strings.HasPrefix(disp, "unix:"):
		op := OpBind
		if reverse {
			op = OpConnect
		}
		d.s.addUnix(absPath(disp[5:], d.cwd), Stream, op, origin+" unix:")
	default:
		host, n, err := SplitHostPort(disp)
		if err != nil {
			return err
		}
		op, port := OpBind, n
		if reverse {
			op = OpConnect
		} else {
			num, err := strconv.Atoi(n)
			if err != nil || num < 0 {
				return fmt.Errorf("display %q: want [HOST]:N", disp)
			}
			port = strconv.Itoa(5900 + num)
			if to := o.str("to"); to != "" {
				t, err := strconv.Atoi(to)
				if err != nil {
					return fmt.Errorf("to=%s: want a display number", to)
				}
				port += "-" + strconv.Itoa(5900+t)
			}
			if ws, ok := o.get("websocket"); ok && ws != "off" {
				wsAddr := ws
				if ws == "on" {
					wsAddr = joinHostPort(host, strconv.Itoa(5700+num))
				} else if !strings.Contains(ws, ":") {
					wsAddr = joinHostPort(host, ws)
				}
				wh, wp, err := SplitHostPort(wsAddr)
				if err != nil {
					return fmt.Errorf("websocket=%s: %w", ws, err)
				}
				d.s.addInet(wh, wp, Stream, OpBind, origin+" websocket=")
			}
		}
		d.s.addInet(host, port, Stream, op, origin)
	}
	d.dir(o.str("x509"), ReadOnly, origin+" x509=")
	d.dir(o.str("x509verify"), ReadOnly, origin+" x509verify=")
	d.leftovers(o, origin)
	return nil
}

// display handles -display TYPE,….
func (d *deriver) display(o *opts, origin string) error {
	typ := o.str("type")
	origin += " " + typ
	switch typ {
	case "none", "curses", "default":
	case "vnc":
		// -display vnc=DISPLAY parses as type=vnc with the display after "=".
	case "egl-headless":
		d.devNode(o.str("rendernode"), ReadWrite, origin+" rendernode=")
	case "gtk", "sdl", "cocoa":
		d.s.warnf("%s: a window on the desktop: QEMU connects to the X11 or Wayland server; not in the set", origin)
	case "spice-app":
		d.s.warnf("%s: QEMU starts a SPICE viewer (exec); the profile denies exec", origin)
	case "dbus":
		d.s.warnf("%s: QEMU connects to the D-Bus address %s; not in the set", origin, o.str("addr"))
	default:
		if v, ok := strings.CutPrefix(typ, "vnc="); ok {
			return d.vnc(v, origin)
		}
		d.s.warnf("%s: display type not understood; not in the set", origin)
	}
	d.leftovers(o, origin)
	return nil
}

// audiodev handles -audiodev and -audio.
func (d *deriver) audiodev(o *opts, origin string) {
	drv, origin := kindOf(o, "driver", origin)
	switch drv {
	case "none", "spice":
	case "wav":
		p := o.strOr("path", "qemu.wav")
		d.file(p, Create, origin+" path=")
	case "oss":
		for _, k := range []string{"in.dev", "out.dev"} {
			v := o.strOr(k, "/dev/dsp")
			d.devNode(v, ReadWrite, origin+" "+k+"=")
		}
	case "alsa":
		d.s.addDevice(Device{Path: "/dev/snd/*", Access: ReadWrite, Pattern: true, Option: origin})
		d.s.warnf("%s: ALSA reads its configuration (/usr/share/alsa, ~/.asoundrc) and may load plugins", origin)
	default:
		d.s.warnf("%s: audio driver %s talks to a sound server kfv does not list", origin, drv)
	}
	d.leftovers(o, origin)
}

// tpmdev handles -tpmdev: a host TPM passed through, or swtpm's chardev.
func (d *deriver) tpmdev(o *opts, origin string) {
	typ, origin := kindOf(o, "type", origin)
	if typ == "passthrough" {
		p := o.strOr("path", "/dev/tpm0")
		d.devNode(p, ReadWrite, origin+" path=")
		if c := o.str("cancel-path"); c != "" {
			d.file(c, ReadWrite, origin+" cancel-path=")
		} else {
			d.s.addFile(File{Path: "cancel", Abs: "/sys/class/*/" + filepath.Base(p) + "/device/cancel", Access: ReadWrite, Pattern: true, Option: origin + " (cancel-path)"})
		}
	}
	d.leftovers(o, origin)
}

// maxReadconfig bounds -readconfig files and their count.
const (
	maxReadconfigSize = 1 << 20
	maxReadconfig     = 16
)

// readConfig adds a -readconfig file and derives from its sections as
// if they were options: [drive "id"], [chardev "id"], [netdev "id"]….
func (d *deriver) readConfig(p, origin string) error {
	d.file(p, ReadOnly, origin)
	if d.fsys == nil {
		d.s.warnf("%s %s: host files not read; what the file configures is not in the set", origin, p)
		return nil
	}
	d.readconfig++
	if d.readconfig > maxReadconfig {
		return fmt.Errorf("more than %d -readconfig files", maxReadconfig)
	}
	abs := absPath(p, d.cwd)
	b, err := readSmall(d.fsys, abs, maxReadconfigSize)
	if err != nil {
		d.s.warnf("%s %s: %v; what the file configures is not in the set", origin, p, err)
		return nil
	}
	secs, err := parseConfig(b)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	for _, sec := range secs {
		so := fmt.Sprintf("%s %s [%s", origin, p, sec.group)
		if sec.id != "" {
			sec.o.set("id", sec.id)
			so += fmt.Sprintf(" %q", sec.id)
		}
		so += "]"
		if err := d.section(sec, so); err != nil {
			return fmt.Errorf("%s line %d: [%s]: %w", p, sec.line, sec.group, err)
		}
	}
	return nil
}

// section handles one -readconfig section like its option.
func (d *deriver) section(sec configSection, origin string) error {
	o := sec.o
	switch sec.group {
	case "drive":
		return d.drive(o, origin)
	case "chardev":
		return d.chardev(o, origin)
	case "netdev":
		d.hasNet = true
		return d.netdev(o, origin)
	case "net":
		d.hasNet = true
		if o.str("type") == "nic" {
			return nil
		}
		return d.netdev(o, origin)
	case "device":
		d.device(o, origin)
	case "object":
		d.object(o, origin)
	case "fsdev", "virtfs":
		d.fsdev(o, origin)
	case "machine":
		d.machine(o, origin)
	case "accel":
		d.addAccels(o.str("accel"))
	case "name":
		d.s.Name = o.str("guest")
	case "fw_cfg":
		d.file(o.str("file"), ReadOnly, origin+" file=")
	case "spice":
		d.spice(o, origin)
	case "tpmdev":
		d.tpmdev(o, origin)
	case "audiodev":
		d.audiodev(o, origin)
	}
	d.leftovers(o, origin)
	return nil
}

// configSection is one [group "id"] section of a QEMU config file.
type configSection struct {
	group, id string
	line      int
	o         *opts
}

// parseConfig parses QEMU's config file format (qemu_config_parse):
// "# comment", `[group]` or `[group "id"]`, and `key = "value"` lines.
func parseConfig(b []byte) ([]configSection, error) {
	var out []configSection
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), maxReadconfigSize)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: %w: unterminated section header", n, errSyntax)
			}
			inner := strings.TrimSpace(line[1 : len(line)-1])
			group, id, hasID := strings.Cut(inner, " ")
			sec := configSection{group: group, line: n, o: newOpts()}
			if hasID {
				uq, err := strconv.Unquote(strings.TrimSpace(id))
				if err != nil {
					return nil, fmt.Errorf("line %d: %w: section id %s: want a quoted string", n, errSyntax, id)
				}
				sec.id = uq
			}
			out = append(out, sec)
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: %w: want key = \"value\"", n, errSyntax)
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("line %d: %w: value outside a section", n, errSyntax)
		}
		v = strings.TrimSpace(v)
		if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
			return nil, fmt.Errorf("line %d: %w: value %s: want a double-quoted string", n, errSyntax, v)
		}
		out[len(out)-1].o.set(strings.TrimSpace(k), v[1:len(v)-1])
	}
	if err := sc.Err(); err != nil {
		return nil, errors.Join(errSyntax, err)
	}
	return out, nil
}

// IsCPUDevice says a -device (or device_add) driver is a vCPU: x86's
// CPU models are devices named MODEL-x86_64-cpu (or -i386-cpu).
func IsCPUDevice(driver string) bool {
	return strings.HasSuffix(driver, "-x86_64-cpu") || strings.HasSuffix(driver, "-i386-cpu")
}
