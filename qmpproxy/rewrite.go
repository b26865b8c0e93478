package qmpproxy

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"kfv/resources"
)

// Monitor is one monitor named on QEMU's command line.
type Monitor struct {
	// Option is where it came from, for messages: "-qmp unix:/run/x.sock,…"
	// or "-chardev socket,id=charmonitor,… (-mon chardev=charmonitor,mode=control)".
	Option string
	// ID is the chardev id, "" for the short forms (-qmp unix:…).
	ID string
	// Mode is "control" (QMP) or "readline" (HMP).
	Mode string
	// Path is the unix socket path the manager connects to, as the
	// command line gives it (relative to QEMU's working directory; "@name"
	// for the abstract namespace); "" when FD is used.
	Path string
	// FD is the inherited listening socket the manager connects to
	// (chardev fd=N, QEMU's fd number), or -1.
	FD int
	// Private is the path QEMU listens on instead: the proxy connects
	// there for each manager connection. "" when Skip is set.
	Private string
	// Skip says why the monitor is not proxied ("" when it is); QEMU's
	// arguments for it are unchanged. The supervisor should print it as
	// a warning: files the commands on such a monitor name are not
	// admitted, so QEMU's opens of them are denied.
	Skip string
}

// Proxied reports whether the proxy serves m.
func (m Monitor) Proxied() bool { return m.Skip == "" }

// kv is one element of an option value: key=value, or a bare word (val
// unset).
type kv struct {
	key, val string
	bare     bool
}

// parseKV splits QEMU's "key=value,…" syntax (",," is a literal comma).
func parseKV(s string) []kv {
	var out []kv
	for _, part := range resources.SplitOpts(s) {
		k, v, ok := strings.Cut(part, "=")
		out = append(out, kv{key: k, val: v, bare: !ok})
	}
	return out
}

// joinKV writes elements back, escaping commas in values.
func joinKV(elems []kv) string {
	parts := make([]string, len(elems))
	for i, e := range elems {
		if e.bare {
			parts[i] = e.key
		} else {
			parts[i] = e.key + "=" + resources.EscapeOpt(e.val)
		}
	}
	return strings.Join(parts, ",")
}

// lookup returns the last value of key and whether it was given; a bare
// "key" is "on" and a bare "nokey" is "off", as QEMU reads them.
func lookup(elems []kv, key string) (string, bool) {
	val, found := "", false
	for _, e := range elems {
		switch {
		case e.bare && e.key == key:
			val, found = "on", true
		case e.bare && e.key == "no"+key:
			val, found = "off", true
		case !e.bare && e.key == key:
			val, found = e.val, true
		}
	}
	return val, found
}

func isOn(v string) bool { return v == "on" || v == "yes" || v == "true" || v == "y" }

// without drops the elements whose key is one of keys (bare forms too).
func without(elems []kv, keys ...string) []kv {
	var out []kv
	for _, e := range elems {
		drop := false
		for _, k := range keys {
			if e.key == k || (e.bare && e.key == "no"+k) {
				drop = true
			}
		}
		if !drop {
			out = append(out, e)
		}
	}
	return out
}

// Rewrite returns QEMU's arguments (without argv[0]) with every QMP
// monitor that listens on a unix socket moved to a private socket in
// privateDir (a directory only kfv can enter), and the list of monitors
// found, proxied or not. args is not modified.
//
// The rules, per monitor form:
//
//   - -qmp unix:PATH,server=on[,wait=off] (also -qmp-pretty, and the
//     deprecated "server,nowait"): becomes -qmp unix:PRIVATE,server=on,…
//     with every other option kept; Monitor.Path is PATH.
//   - -chardev socket,id=ID,path=PATH,server=on[,…] used by
//     -mon chardev=ID,mode=control, or by -qmp chardev:ID: path= becomes
//     PRIVATE (abstract= and tight= are dropped); Monitor.Path is PATH.
//   - -chardev socket,id=ID,fd=N,server=on[,…] (libvirt's monitor: a
//     listening socket inherited as fd N): fd=N becomes path=PRIVATE;
//     Monitor.FD is N. QEMU no longer uses fd N: the supervisor takes it
//     (Listen) and must not leave it open in QEMU.
//   - HMP monitors (-monitor, -mon mode=readline, the default mode) are
//     left alone and listed with Skip set. Proxying them byte for byte
//     would tell kfv nothing, and parsing HMP's line-editing terminal
//     protocol (echo, escape sequences, readline history) is not worth
//     it for what managers do not use: libvirt drives QEMU over QMP
//     alone, and reaches HMP only through human-monitor-command, which
//     the proxy parses. An HMP command that opens a file is still
//     refused by kfv's file policy, with a denial event.
//   - Monitors the proxy cannot serve are left alone, listed with Skip:
//     QEMU as the client (no server=on), TCP and other network
//     transports, TLS (tls-creds=, the proxy cannot read the stream),
//     websocket and telnet framing, mux (mon:), and a -chardev fd=N that
//     is not listening.
//
// Monitors defined only inside a -readconfig file are not seen.
//
// An error means a monitor option QEMU would also reject, or a private
// path too long for a unix socket.
func Rewrite(args []string, privateDir string) ([]string, []Monitor, error) {
	out := append([]string(nil), args...)
	type chardev struct {
		idx   int // index of the value in out
		elems []kv
	}
	chardevs := map[string]chardev{}
	type use struct {
		id, mode, option string
	}
	var uses []use // -mon and -qmp/-monitor chardev:ID, in order
	var monitors []Monitor
	n := 0
	private := func() (string, error) {
		p := filepath.Join(privateDir, fmt.Sprintf("mon%d.sock", n))
		n++
		// sockaddr_un.sun_path is 108 bytes with the terminating NUL.
		if len(p) > 107 {
			return "", fmt.Errorf("rewrite monitors: private socket path %s is longer than a unix socket path may be", p)
		}
		return p, nil
	}

	for i := 0; i < len(out); i++ {
		a := out[i]
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name := strings.TrimPrefix(a[1:], "-")
		if resources.IsFlag(name) || i+1 == len(out) {
			continue
		}
		i++
		v := out[i]
		switch name {
		case "chardev":
			elems := parseKV(v)
			if len(elems) > 0 && elems[0].bare {
				elems[0] = kv{key: "backend", val: elems[0].key}
			}
			if id, ok := lookup(elems, "id"); ok {
				chardevs[id] = chardev{idx: i, elems: elems}
			}
		case "mon":
			elems := parseKV(v)
			if len(elems) > 0 && elems[0].bare {
				elems[0] = kv{key: "chardev", val: elems[0].key}
			}
			id, _ := lookup(elems, "chardev")
			mode, ok := lookup(elems, "mode")
			if !ok {
				mode = "readline"
			}
			uses = append(uses, use{id: id, mode: mode, option: a + " " + v})
		case "qmp", "qmp-pretty", "monitor":
			mode := "control"
			if name == "monitor" {
				mode = "readline"
			}
			if id, ok := strings.CutPrefix(v, "chardev:"); ok {
				uses = append(uses, use{id: id, mode: mode, option: a + " " + v})
				continue
			}
			m, ok := shortMonitor(a, v, mode)
			if !ok {
				continue // stdio, vc, none, a file…: not a socket
			}
			if m.Skip == "" {
				p, err := private()
				if err != nil {
					return nil, nil, err
				}
				m.Private = p
				rest := parseKV(strings.TrimPrefix(v, "unix:"))
				if len(rest) > 0 && rest[0].bare {
					rest = rest[1:] // the implied path
				}
				rest = without(rest, "path", "abstract", "tight")
				out[i] = "unix:" + resources.EscapeOpt(p)
				if r := joinKV(rest); r != "" {
					out[i] += "," + r
				}
			}
			monitors = append(monitors, m)
		}
	}

	for _, u := range uses {
		c, ok := chardevs[u.id]
		opt := u.option
		if ok {
			opt = "-chardev " + out[c.idx] + " (" + u.option + ")"
		}
		m := Monitor{Option: opt, ID: u.id, Mode: u.mode, FD: -1}
		if !ok {
			m.Skip = fmt.Sprintf("monitor chardev %q is not defined by a -chardev option", u.id)
			monitors = append(monitors, m)
			continue
		}
		backend, _ := lookup(c.elems, "backend")
		if backend != "socket" {
			continue // not a socket: nothing to proxy
		}
		fd, hasFD := lookup(c.elems, "fd")
		path, hasPath := lookup(c.elems, "path")
		if abs, _ := lookup(c.elems, "abstract"); hasPath && isOn(abs) {
			path = "@" + path
		}
		m.Path = path
		if hasFD {
			num, err := strconv.Atoi(fd)
			if err != nil || num < 0 {
				m.Skip = fmt.Sprintf("fd=%s is not an fd number", fd)
				monitors = append(monitors, m)
				continue
			}
			m.FD, m.Path = num, ""
		}
		m.Skip = skipReason(c.elems, u.mode, hasPath || hasFD)
		if m.Skip != "" {
			monitors = append(monitors, m)
			continue
		}
		p, err := private()
		if err != nil {
			return nil, nil, err
		}
		m.Private = p
		elems := without(c.elems, "path", "fd", "abstract", "tight")
		elems = append(elems, kv{key: "path", val: p})
		if elems[0].key == "backend" {
			elems[0] = kv{key: elems[0].val, bare: true} // as written: implied
		}
		out[c.idx] = joinKV(elems)
		monitors = append(monitors, m)
	}
	return out, monitors, nil
}

// skipReason says why a socket chardev used as a monitor is not proxied.
func skipReason(elems []kv, mode string, unix bool) string {
	if mode != "control" {
		return "HMP monitor (mode=readline): not proxied; files its commands name are not admitted"
	}
	if srv, _ := lookup(elems, "server"); !isOn(srv) {
		return "QEMU connects out to its manager (no server=on): not proxied"
	}
	if !unix {
		return "not a unix socket (host=/port=): not proxied"
	}
	for _, k := range []string{"tls-creds", "websocket", "telnet", "tn3270"} {
		if v, ok := lookup(elems, k); ok && (k == "tls-creds" || isOn(v)) {
			return fmt.Sprintf("%s: the proxy cannot read this stream: not proxied", k)
		}
	}
	return ""
}

// shortMonitor reads -qmp/-qmp-pretty/-monitor VALUE forms that are
// sockets; ok is false for the others (stdio, vc, none, pty, file:…).
func shortMonitor(option, v, mode string) (Monitor, bool) {
	m := Monitor{Option: option + " " + v, Mode: mode, FD: -1}
	switch {
	case strings.HasPrefix(v, "mon:"):
		m.Skip = "multiplexed (mon:): not proxied"
		return m, true
	case strings.HasPrefix(v, "tcp:"), strings.HasPrefix(v, "telnet:"), strings.HasPrefix(v, "tn3270:"), strings.HasPrefix(v, "websocket:"):
		m.Skip = "not a unix socket: not proxied"
		return m, true
	case !strings.HasPrefix(v, "unix:"):
		return m, false
	}
	elems := parseKV(strings.TrimPrefix(v, "unix:"))
	if len(elems) > 0 && elems[0].bare {
		elems[0] = kv{key: "path", val: elems[0].key}
	}
	m.Path, _ = lookup(elems, "path")
	if abs, _ := lookup(elems, "abstract"); isOn(abs) {
		m.Path = "@" + m.Path
	}
	m.Skip = skipReason(elems, mode, true)
	return m, true
}
