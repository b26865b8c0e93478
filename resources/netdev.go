package resources

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// netdev handles -netdev TYPE,… and the same backends in -nic and -net.
func (d *deriver) netdev(o *opts, origin string) error {
	typ, origin := kindOf(o, "type", origin)
	switch typ {
	case "user":
		if err := d.netUser(o, origin); err != nil {
			return err
		}
	case "tap":
		d.tap(o, origin)
	case "bridge":
		helper := o.strOr("helper", "qemu-bridge-helper")
		d.s.warnf("%s: QEMU runs the setuid %s to get a tap fd; exec is denied, and no_new_privs would defeat setuid anyway: pass a tap fd instead", origin, helper)
	case "socket":
		if err := d.netSocket(o, origin); err != nil {
			return err
		}
	case "stream":
		op, err := serverOp(o)
		if err != nil {
			return err
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
		sock := o.strOr("sock", "/tmp/vde.ctl")
		d.s.addUnix(absPath(sock, d.cwd)+"/ctl", Stream, OpConnect, origin+" sock=")
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
	d.s.addInet(h, port, typ, OpBind, origin)
	return nil
}

// tap handles a tap backend: given fds, or /dev/net/tun opened by QEMU
// with its ifup and ifdown scripts.
func (d *deriver) tap(o *opts, origin string) {
	given := d.fdList(o, "fd", origin)
	helper, hasHelper := o.get("helper")
	switch {
	case given:
	case hasHelper:
		d.s.warnf("%s helper=%s: QEMU runs a setuid helper to get a tap fd; exec is denied, and no_new_privs would defeat setuid anyway: pass a tap fd instead", origin, helper)
	default:
		d.s.addDevice(Device{Path: "/dev/net/tun", Access: ReadWrite, Option: origin})
		d.s.TapNames = appendNew(d.s.TapNames, tapName(o.str("ifname")))
		d.macvtap(o.str("ifname"), origin+" ifname=")
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
	if !d.fdList(o, "vhostfd", origin) {
		vhost, err := o.boolean("vhost", false)
		force, ferr := o.boolean("vhostforce", false)
		if (err == nil && vhost) || (ferr == nil && force) {
			d.s.addDevice(Device{Path: "/dev/vhost-net", Access: ReadWrite, Option: origin + " vhost=on"})
		}
	}
}

// ifNameMax is IFNAMSIZ-1: the bytes of an interface name before the NUL.
const ifNameMax = 15

// tapName is the name QEMU's tap_open gives TUNSETIFF: ifname= cut to
// what struct ifreq holds, or "tap%d" (the kernel picks the next free
// tapN) when there is none.
func tapName(ifname string) string {
	if ifname == "" {
		return "tap%d"
	}
	if len(ifname) > ifNameMax {
		ifname = ifname[:ifNameMax]
	}
	return ifname
}

// macvtap adds the character device of a macvtap interface named by a
// tap's ifname=: QEMU 10.0 opens /dev/tapIFINDEX first, in case the
// interface is a macvtap (ENOENT for a plain tap, measured with strace),
// then /dev/net/tun. The index is the interface's on this host now; an
// interface QEMU will create has none yet, and QEMU tries no macvtap.
func (d *deriver) macvtap(ifname, origin string) {
	if ifname == "" || d.fsys == nil || strings.ContainsAny(ifname, "/%") || ifname == "." || ifname == ".." {
		return
	}
	b, err := readSmall(d.fsys, "/sys/class/net/"+ifname+"/ifindex", 32)
	if err != nil {
		return
	}
	idx, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || idx <= 0 {
		return
	}
	d.s.addDevice(Device{Path: fmt.Sprintf("/dev/tap%d", idx), Access: ReadWrite, Option: origin + ifname + " (its macvtap device, if it is one)"})
}

// fdList records the fd of key= or the fds of keys= (a ":"-separated
// list), which QEMU takes instead of opening a device itself, and reports
// whether either was given.
func (d *deriver) fdList(o *opts, key, origin string) bool {
	one, hasOne := o.get(key)
	many, hasMany := o.get(key + "s")
	switch {
	case hasOne:
		d.fd(one, origin+" "+key+"=")
	case hasMany:
		for _, f := range strings.Split(many, ":") {
			d.fd(f, origin+" "+key+"s=")
		}
	default:
		return false
	}
	return true
}

// netSocket handles the socket backend: listen=, connect=, mcast=, udp=.
func (d *deriver) netSocket(o *opts, origin string) error {
	if fd, ok := o.get("fd"); ok {
		d.fd(fd, origin+" fd=")
		return nil
	}
	// Each key given is an inet address, with the socket QEMU makes of it.
	type endpoint struct{ key, typ, op string }
	ends := []endpoint{{"listen", Stream, OpBind}, {"connect", Stream, OpConnect}}
	switch {
	case o.has("mcast"):
		// QEMU binds the group address and sends to it; localaddr= is
		// then an interface address for IP_MULTICAST_IF.
		ends = append(ends, endpoint{"mcast", Dgram, OpBind}, endpoint{"mcast", Dgram, OpConnect})
		o.str("localaddr")
	case o.has("udp"):
		ends = append(ends, endpoint{"udp", Dgram, OpConnect}, endpoint{"localaddr", Dgram, OpBind})
	}
	for _, e := range ends {
		v, ok := o.get(e.key)
		if !ok {
			continue
		}
		h, p, err := SplitHostPort(v)
		if err != nil {
			return fmt.Errorf("%s=%s: %w", e.key, v, err)
		}
		d.s.addInet(h, p, e.typ, e.op, origin+" "+e.key+"=")
	}
	return nil
}

// sockAddr adds a QAPI SocketAddress (type=inet|unix|vsock|fd).
func (d *deriver) sockAddr(a *opts, typ, op, origin string) error {
	switch t := a.str("type"); t {
	case "inet":
		d.s.addInet(a.str("host"), portRange(a.str("port"), a), typ, op, origin)
	case "unix":
		addr, err := d.unixAddr(a, a.str("path"))
		if err != nil {
			return err
		}
		d.s.addUnix(addr, typ, op, origin)
	case "vsock":
		d.s.addVsock(a.str("cid"), a.str("port"), typ, op, origin)
	case "fd":
		d.fd(a.str("str"), origin+"str=")
	default:
		return fmt.Errorf("%s type=%s: want inet, unix, vsock or fd", origin, t)
	}
	return nil
}

// serverOp reads server= (off by default): QEMU listens on the address
// when it is on, and connects to it when it is off.
func serverOp(o *opts) (string, error) {
	server, err := o.boolean("server", false)
	if err != nil || !server {
		return OpConnect, err
	}
	return OpBind, nil
}

// unixAddr is the address of a unix socket at path: "@path" in the
// abstract namespace when abstract= is on, else path made absolute.
func (d *deriver) unixAddr(o *opts, path string) (string, error) {
	abstract, err := o.boolean("abstract", false)
	if err != nil {
		return "", err
	}
	if abstract {
		return "@" + path, nil
	}
	return absPath(path, d.cwd), nil
}

// portRange is port, or the range port-to when to= gives the last port
// QEMU may take.
func portRange(port string, o *opts) string {
	if to := o.str("to"); to != "" {
		return port + "-" + to
	}
	return port
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
	d.s.addInet(src, o.str("srcport"), typ, OpBind, origin+" src=")
	d.s.addInet(dst, o.str("dstport"), typ, OpConnect, origin+" dst=")
}
