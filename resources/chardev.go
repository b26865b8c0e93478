package resources

import (
	"errors"
	"fmt"
	"strings"
)

// chardev handles -chardev BACKEND,id=…,….
func (d *deriver) chardev(o *opts, origin string) error {
	backend, origin := kindOf(o, "backend", origin)
	d.file(o.str("logfile"), Create, origin+" logfile=")
	switch backend {
	case "socket":
		if err := d.chardevSocket(o, origin); err != nil {
			return err
		}
	case "udp":
		host, ok := o.get("host")
		if !ok {
			host = "localhost"
		}
		d.s.addInet(host, o.str("port"), Dgram, OpConnect, origin)
		if la, lp := o.str("localaddr"), o.str("localport"); la != "" || lp != "" {
			if lp == "" {
				lp = "0"
			}
			d.s.addInet(la, lp, Dgram, OpBind, origin+" localaddr=")
		}
	case "file":
		d.file(o.str("path"), Create, origin+" path=")
		d.file(o.str("input-path"), ReadOnly, origin+" input-path=")
	case "pipe":
		// QEMU opens PATH.in and PATH.out, or PATH when either is missing,
		// all read-write.
		if p := o.str("path"); p != "" {
			d.file(p+".in", ReadWrite, origin+" path=")
			d.file(p+".out", ReadWrite, origin+" path=")
			d.file(p, ReadWrite, origin+" path=")
		}
	case "serial", "tty", "parallel", "parport":
		d.devNode(o.str("path"), ReadWrite, origin+" path=")
	case "pty":
		// glibc's openpty gets the slave from the master (TIOCGPTPEER):
		// QEMU never opens a /dev/pts/N by path, so no pty but the one
		// whose master it holds is reachable (another VM's console is).
		d.s.addDevice(Device{Path: "/dev/ptmx", Access: ReadWrite, Option: origin})
	case "braille":
		d.s.warnf("%s: the braille backend connects to the brlapi daemon's socket; not in the set", origin)
	case "dbus":
		d.s.warnf("%s: the dbus backend talks over QEMU's D-Bus connection; not in the set", origin)
	case "null", "stdio", "vc", "console", "ringbuf", "memory", "msmouse", "wctablet",
		"testdev", "spicevmc", "spiceport", "qemu-vdagent", "mux":
	case "":
		return errors.New("no backend")
	default:
		return fmt.Errorf("unknown chardev backend %q", backend)
	}
	d.leftovers(o, origin)
	return nil
}

// chardevSocket adds a socket chardev: path= (unix), host=/port= (inet),
// or fd=.
func (d *deriver) chardevSocket(o *opts, origin string) error {
	op, err := serverOp(o)
	if err != nil {
		return err
	}
	if fd, ok := o.get("fd"); ok {
		d.fd(fd, origin+" fd=")
		return nil
	}
	if p, ok := o.get("path"); ok {
		addr, err := d.unixAddr(o, p)
		if err != nil {
			return err
		}
		d.s.addUnix(addr, Stream, op, origin+" path=")
		return nil
	}
	port, ok := o.get("port")
	if !ok {
		return errors.New("socket: want path=, port= or fd=")
	}
	d.s.addInet(o.str("host"), portRange(port, o), Stream, op, origin+" host=,port=")
	return nil
}

// chardevShort handles the short forms of -serial, -parallel, -monitor,
// -qmp, -debugcon and -gdb (QEMU's qemu_chr_parse_compat).
func (d *deriver) chardevShort(v, origin string) error {
	if v == "none" || strings.HasPrefix(v, "chardev:") {
		return nil // nothing, or a -chardev handled on its own
	}
	v = strings.TrimPrefix(v, "mon:")
	o, err := parseCompat(v)
	if err != nil {
		return err
	}
	return d.chardev(o, origin)
}

// parseCompat turns a chardev short form into -chardev options.
func parseCompat(v string) (*opts, error) {
	o := newOpts()
	switch v {
	case "null", "pty", "msmouse", "wctablet", "braille", "testdev", "stdio", "con:":
		o.set("backend", strings.TrimSuffix(v, ":"))
		return o, nil
	}
	if strings.HasPrefix(v, "vc") {
		o.set("backend", "vc")
		return o, nil
	}
	if p, ok := strings.CutPrefix(v, "file:"); ok {
		o.set("backend", "file")
		o.set("path", p)
		return o, nil
	}
	if p, ok := strings.CutPrefix(v, "pipe:"); ok {
		o.set("backend", "pipe")
		o.set("path", p)
		return o, nil
	}
	for _, pfx := range []string{"tcp:", "telnet:", "tn3270:", "websocket:"} {
		p, ok := strings.CutPrefix(v, pfx)
		if !ok {
			continue
		}
		hp, rest, _ := strings.Cut(p, ",")
		host, port, err := SplitHostPort(hp)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", errSyntax, strings.TrimSuffix(pfx, ":"), err)
		}
		if rest != "" {
			r, err := parseOpts(rest, "", false)
			if err != nil {
				return nil, err
			}
			o = r
		}
		o.set("backend", "socket")
		o.set("host", host)
		o.set("port", port)
		return o, nil
	}
	if p, ok := strings.CutPrefix(v, "udp:"); ok {
		remote, local, hasLocal := strings.Cut(p, "@")
		remote, _, _ = strings.Cut(remote, ",")
		host, port, err := SplitHostPort(remote)
		if err != nil {
			return nil, fmt.Errorf("%w: udp: %w", errSyntax, err)
		}
		o.set("backend", "udp")
		o.set("host", host)
		o.set("port", port)
		if hasLocal {
			local, _, _ = strings.Cut(local, ",")
			la, lp, err := SplitHostPort(local)
			if err != nil {
				return nil, fmt.Errorf("%w: udp: local address: %w", errSyntax, err)
			}
			o.set("localaddr", la)
			o.set("localport", lp)
		}
		return o, nil
	}
	if p, ok := strings.CutPrefix(v, "unix:"); ok {
		r, err := parseOpts(p, "path", false)
		if err != nil {
			return nil, err
		}
		r.set("backend", "socket")
		return r, nil
	}
	if strings.HasPrefix(v, "/dev/parport") || strings.HasPrefix(v, "/dev/ppi") {
		o.set("backend", "parallel")
		o.set("path", v)
		return o, nil
	}
	if strings.HasPrefix(v, "/dev/") {
		o.set("backend", "serial")
		o.set("path", v)
		return o, nil
	}
	return nil, fmt.Errorf("%w: %q is not a valid char driver", errSyntax, v)
}
