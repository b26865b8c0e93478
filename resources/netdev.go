package resources

import (
	"fmt"
	"sort"
	"strings"
)

// netdev handles -netdev TYPE,… and the same backends in -nic and -net.
func (d *deriver) netdev(o *opts, origin string) error {
	typ := o.str("type")
	origin += " " + typ + idOf(o)
	switch typ {
	case "user":
		if err := d.netUser(o, origin); err != nil {
			return err
		}
	case "tap":
		d.tap(o, origin)
	case "bridge":
		helper := o.str("helper")
		if helper == "" {
			helper = "qemu-bridge-helper"
		}
		d.s.warnf("%s: QEMU runs the setuid %s to get a tap fd; exec is denied, and no_new_privs would defeat setuid anyway: pass a tap fd instead", origin, helper)
	case "socket":
		if err := d.netSocket(o, origin); err != nil {
			return err
		}
	case "stream":
		server, err := o.boolean("server", false)
		if err != nil {
			return err
		}
		op := OpConnect
		if server {
			op = OpBind
		}
		if err := d.sockAddr(o.withPrefix("addr."), Stream, op, origin+" addr."); err != nil {
			return err
		}
	case "dgram":
		if o.hasPrefix("local.") {
			if err := d.sockAddr(o.withPrefix("local."), Dgram, OpBind, origin+" local."); err != nil {
				return err
			}
		}
		if o.hasPrefix("remote.") {
			if err := d.sockAddr(o.withPrefix("remote."), Dgram, OpConnect, origin+" remote."); err != nil {
				return err
			}
		}
	case "vde":
		sock := o.str("sock")
		if sock == "" {
			sock = "/tmp/vde.ctl"
		}
		d.s.addSocket(Socket{Family: FamilyUnix, Type: Stream, Address: absPath(sock, d.cwd) + "/ctl", Op: OpConnect, Option: origin + " sock="})
		d.s.warnf("%s: libvdeplug also binds a data socket of its own choosing under %s; not in the set", origin, sock)
	case "vhost-vdpa":
		if fd, ok := o.get("vhostfd"); ok {
			d.fd(fd, origin+" vhostfd=")
		} else {
			d.devNode(o.str("vhostdev"), ReadWrite, origin+" vhostdev=")
		}
	case "l2tpv3":
		d.l2tpv3(o, origin)
	case "netmap":
		d.s.addDevice(Device{Path: "/dev/netmap", Access: ReadWrite, Option: origin})
	case "vhost-user", "hubport", "none":
		// vhost-user's socket is its -chardev; hubport joins a hub.
	default:
		d.s.warnf("%s: network backend %s not understood; not in the set", origin, typ)
	}
	d.leftovers(o, origin)
	return nil
}

// netUser handles user-mode networking: slirp connects wherever the guest
// connects unless restrict=on; hostfwd binds on the host, guestfwd
// connects to a chardev, smb runs smbd on a directory, tftp serves one.
func (d *deriver) netUser(o *opts, origin string) error {
	restrict, err := o.boolean("restrict", false)
	if err != nil {
		return err
	}
	if !restrict {
		d.s.NetUser = true
	}
	for _, v := range indexed(o, "hostfwd") {
		if err := d.hostfwd(v, origin+" hostfwd="+v); err != nil {
			return err
		}
	}
	for _, v := range indexed(o, "guestfwd") {
		// [tcp]:SERVER:PORT-DEV, DEV a chardev short form or cmd:COMMAND.
		_, dev, ok := strings.Cut(v, "-")
		if !ok {
			return fmt.Errorf("guestfwd=%s: want [tcp]:SERVER:PORT-DEV", v)
		}
		if strings.HasPrefix(dev, "cmd:") {
			d.s.warnf("%s guestfwd=%s: QEMU runs a command for each guest connection; the profile denies exec", origin, v)
			continue
		}
		if err := d.chardevShort(dev, origin+" guestfwd="); err != nil {
			return fmt.Errorf("guestfwd=%s: %w", v, err)
		}
	}
	if smb := o.str("smb"); smb != "" {
		d.dir(smb, ReadWrite, origin+" smb=")
		d.s.warnf("%s smb=%s: QEMU runs smbd to share the directory; the profile denies exec", origin, smb)
	}
	d.dir(o.str("tftp"), ReadOnly, origin+" tftp=")
	return nil
}

// indexed returns every value of a repeatable option: KEY as often as
// it is given, and the JSON form KEY.N.str.
func indexed(o *opts, key string) []string {
	vals := append([]string(nil), o.all(key)...)
	var js []string
	for _, k := range o.keys {
		if rest, ok := strings.CutPrefix(k, key+"."); ok && strings.HasSuffix(rest, ".str") {
			js = append(js, k)
		}
	}
	sort.Strings(js)
	for _, k := range js {
		vals = append(vals, o.str(k))
	}
	return vals
}

// hostfwd adds the host side of "[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT".
func (d *deriver) hostfwd(v, origin string) error {
	proto, rest, ok := strings.Cut(v, ":")
	if !ok {
		return fmt.Errorf("hostfwd=%s: want [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT", v)
	}
	typ := Stream
	switch proto {
	case "", "tcp":
	case "udp":
		typ = Dgram
	default:
		return fmt.Errorf("hostfwd=%s: protocol %q: want tcp or udp", v, proto)
	}
	host, _, ok := strings.Cut(rest, "-")
	if !ok {
		return fmt.Errorf("hostfwd=%s: no guest side", v)
	}
	h, port, err := SplitHostPort(host)
	if err != nil {
		return fmt.Errorf("hostfwd=%s: %w", v, err)
	}
	d.s.addSocket(Socket{Family: inetFamily(h), Type: typ, Address: joinHostPort(h, port), Op: OpBind, Option: origin})
	return nil
}

// tap handles a tap backend: given fds, or /dev/net/tun opened by QEMU
// with its ifup and ifdown scripts.
func (d *deriver) tap(o *opts, origin string) {
	fd, hasFD := o.get("fd")
	fds, hasFDs := o.get("fds")
	helper, hasHelper := o.get("helper")
	switch {
	case hasFD:
		d.fd(fd, origin+" fd=")
	case hasFDs:
		for _, f := range strings.Split(fds, ":") {
			d.fd(f, origin+" fds=")
		}
	case hasHelper:
		d.s.warnf("%s helper=%s: QEMU runs a setuid helper to get a tap fd; exec is denied, and no_new_privs would defeat setuid anyway: pass a tap fd instead", origin, helper)
	default:
		d.s.addDevice(Device{Path: "/dev/net/tun", Access: ReadWrite, Option: origin})
		o.str("ifname")
		for _, s := range []struct{ key, def string }{{"script", "/etc/qemu-ifup"}, {"downscript", "/etc/qemu-ifdown"}} {
			v, ok := o.get(s.key)
			if !ok {
				v = s.def
			}
			if v != "" && v != "no" {
				d.s.warnf("%s %s=%s: QEMU runs this script; the profile denies exec (give %s=no and set the interface up outside QEMU)", origin, s.key, v, s.key)
			}
		}
	}
	vfd, hasVFD := o.get("vhostfd")
	vfds, hasVFDs := o.get("vhostfds")
	switch {
	case hasVFD:
		d.fd(vfd, origin+" vhostfd=")
	case hasVFDs:
		for _, f := range strings.Split(vfds, ":") {
			d.fd(f, origin+" vhostfds=")
		}
	default:
		vhost, err := o.boolean("vhost", false)
		force, ferr := o.boolean("vhostforce", false)
		if (err == nil && vhost) || (ferr == nil && force) {
			d.s.addDevice(Device{Path: "/dev/vhost-net", Access: ReadWrite, Option: origin + " vhost=on"})
		}
	}
}

// netSocket handles the socket backend: listen=, connect=, mcast=, udp=.
func (d *deriver) netSocket(o *opts, origin string) error {
	if fd, ok := o.get("fd"); ok {
		d.fd(fd, origin+" fd=")
		return nil
	}
	add := func(key, typ, op string) error {
		v, ok := o.get(key)
		if !ok {
			return nil
		}
		h, p, err := SplitHostPort(v)
		if err != nil {
			return fmt.Errorf("%s=%s: %w", key, v, err)
		}
		d.s.addSocket(Socket{Family: inetFamily(h), Type: typ, Address: joinHostPort(h, p), Op: op, Option: origin + " " + key + "="})
		return nil
	}
	if err := add("listen", Stream, OpBind); err != nil {
		return err
	}
	if err := add("connect", Stream, OpConnect); err != nil {
		return err
	}
	if o.has("mcast") {
		// QEMU binds the group address and sends to it.
		if err := add("mcast", Dgram, OpBind); err != nil {
			return err
		}
		if err := add("mcast", Dgram, OpConnect); err != nil {
			return err
		}
		o.str("localaddr") // an interface address for IP_MULTICAST_IF
		return nil
	}
	if o.has("udp") {
		if err := add("udp", Dgram, OpConnect); err != nil {
			return err
		}
		if err := add("localaddr", Dgram, OpBind); err != nil {
			return err
		}
	}
	return nil
}

// sockAddr adds a QAPI SocketAddress (type=inet|unix|vsock|fd).
func (d *deriver) sockAddr(a *opts, typ, op, origin string) error {
	switch t := a.str("type"); t {
	case "inet":
		port := a.str("port")
		if to := a.str("to"); to != "" {
			port += "-" + to
		}
		d.s.addSocket(Socket{Family: inetFamily(a.str("host")), Type: typ, Address: joinHostPort(a.str("host"), port), Op: op, Option: origin})
	case "unix":
		abstract, err := a.boolean("abstract", false)
		if err != nil {
			return err
		}
		addr := absPath(a.str("path"), d.cwd)
		if abstract {
			addr = "@" + a.str("path")
		}
		d.s.addSocket(Socket{Family: FamilyUnix, Type: typ, Address: addr, Op: op, Option: origin})
	case "vsock":
		d.s.addSocket(Socket{Family: FamilyVsock, Type: typ, Address: a.str("cid") + ":" + a.str("port"), Op: op, Option: origin})
	case "fd":
		d.fd(a.str("str"), origin+"str=")
	default:
		return fmt.Errorf("%s type=%s: want inet, unix, vsock or fd", origin, t)
	}
	return nil
}

// l2tpv3 adds an L2TPv3 tunnel: UDP with udp=on, else raw IP.
func (d *deriver) l2tpv3(o *opts, origin string) {
	udp, _ := o.boolean("udp", false) // a bad value fails in QEMU
	typ := Dgram
	if !udp {
		d.s.warnf("%s: L2TPv3 over raw IP needs a raw socket (CAP_NET_RAW)", origin)
	}
	src, dst := o.str("src"), o.str("dst")
	if o.str("ipv6") == "on" {
		src, dst = strings.Trim(src, "[]"), strings.Trim(dst, "[]")
	}
	d.s.addSocket(Socket{Family: inetFamily(src), Type: typ, Address: joinHostPort(src, o.str("srcport")), Op: OpBind, Option: origin + " src="})
	d.s.addSocket(Socket{Family: inetFamily(dst), Type: typ, Address: joinHostPort(dst, o.str("dstport")), Op: OpConnect, Option: origin + " dst="})
}
