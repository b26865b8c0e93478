package integration

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The VM's inet listeners, each derived from its configuration (rules
// vm-inet-bind and vm-inet-listen; kfv performs the listen on the socket
// it checked): a TCP chardev server, slirp's hostfwd (tcp: bind and
// listen, udp: bind), and a migration listener from the command line and
// from QMP at run time. Benign runs: zero denials, and the host reaches
// each listener.

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// dialTCP connects to addr while QEMU starts listening.
func dialTCP(t *testing.T, p *proc, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	var err error
	if !waitFor(30*time.Second, func() bool { c, err = net.DialTimeout("tcp", addr, time.Second); return err == nil }) {
		t.Fatalf("connect to %s: %v\nstderr:\n%s", addr, err, p.stderr)
	}
	return c
}

// chardevTCPServer: QEMU listens on a TCP port of the loopback for its
// serial line (server=on,wait=on: the guest starts once the host is
// connected).
func chardevTCPServer(t *testing.T, b *benign) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	host, port, _ := net.SplitHostPort(addr)
	args := append(withSerial(b.rawExit("KFV-RAW tcp server\n"), "chardev:kfvtcp"),
		"-chardev", fmt.Sprintf("socket,id=kfvtcp,host=%s,port=%s,server=on,wait=on", host, port))
	p := b.run(args)
	c := dialTCP(t, p, addr)
	defer c.Close()
	out, ok := readUntil(c, "KFV-RAW tcp server\n", 20*time.Second)
	wantRawExit(t, p, p.wait(t, time.Minute))
	if !ok {
		t.Errorf("read %q from the chardev, want the guest's line", out)
	}
}

// userHostfwd: slirp binds and listens on a hostfwd's TCP port and binds
// a UDP one (an empty host: every address).
func userHostfwd(t *testing.T, b *benign) {
	tcp, udp := freePort(t), freePort(t)
	args, sock := b.withQMP(append(b.rawLoop("KFV-RAW hostfwd\n"),
		"-netdev", fmt.Sprintf("user,id=kfvnet,hostfwd=tcp:127.0.0.1:%d-:22,hostfwd=udp::%d-:53", tcp, udp),
		"-device", "virtio-net-pci,netdev=kfvnet"))
	p := b.run(args)
	q := dialMon(t, sock, 30*time.Second)
	c := dialTCP(t, p, fmt.Sprintf("127.0.0.1:%d", tcp))
	c.Close()
	// The UDP forward's port is taken: QEMU bound it.
	if u, err := net.ListenPacket("udp", fmt.Sprintf("0.0.0.0:%d", udp)); err == nil {
		u.Close()
		t.Errorf("udp port %d is free: QEMU did not bind its hostfwd", udp)
	}
	quit(t, p, q)
}

// incomingTCP: a migration listener, from -incoming tcp: or, with
// -incoming defer, from migrate-incoming over the QMP monitor kfv serves
// (the L3 hook admits its address before QEMU binds it).
func incomingTCP(runtime bool) func(t *testing.T, b *benign) {
	return func(t *testing.T, b *benign) {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		incoming := "tcp:" + addr
		if runtime {
			incoming = "defer"
		}
		args, sock := b.withQMP(append(b.rawLoop("KFV-RAW incoming\n"), "-incoming", incoming))
		p := b.run(args)
		q := dialMon(t, sock, 30*time.Second)
		if runtime {
			if _, err := q.exec("migrate-incoming", map[string]any{"uri": "tcp:" + addr}); err != nil {
				t.Fatalf("migrate-incoming: %v\nstderr:\n%s", err, p.stderr)
			}
		}
		// A connection would start the migration, and QEMU exits when an
		// incoming migration fails: see that the port is taken instead.
		if !waitFor(30*time.Second, func() bool {
			ln, err := net.Listen("tcp", addr)
			if err == nil {
				ln.Close()
			}
			return err != nil
		}) {
			t.Fatalf("nothing listens on %s\nstderr:\n%s", addr, p.stderr)
		}
		if _, err := q.exec("quit", nil); err != nil && !strings.Contains(err.Error(), "closed") {
			t.Logf("quit: %v", err)
		}
		p.wait(t, 30*time.Second)
	}
}

// tapHotplug: a persistent tap the operator made, added to a running VM
// with netdev_add over the QMP monitor kfv serves: the L3 hook admits
// /dev/net/tun and TUNSETIFF for that name alone before QEMU opens it
// (rule vm-tap-setiff), and kfv performs the TUNSETIFF on its copy of
// QEMU's fd. A multiqueue tap gives the same name for each queue.
func tapHotplug(t *testing.T, b *benign) {
	needRoot(t)
	h := newHostNet(t)
	ipCmd(t, "tuntap", "add", "dev", h.name, "mode", "tap", "multi_queue")
	t.Cleanup(func() { exec.Command("ip", "link", "del", h.name).Run() })
	args, sock := b.withQMP(b.rawLoop("KFV-RAW tap hotplug\n"))
	p := b.run(args)
	q := dialMon(t, sock, 30*time.Second)
	if _, err := q.exec("netdev_add", map[string]any{"type": "tap", "id": "kfvhot", "ifname": h.name, "queues": 2, "script": "no", "downscript": "no"}); err != nil {
		t.Fatalf("netdev_add tap %s: %v\nstderr:\n%s", h.name, err, p.stderr)
	}
	if _, err := q.exec("netdev_del", map[string]any{"id": "kfvhot"}); err != nil {
		t.Errorf("netdev_del: %v", err)
	}
	quit(t, p, q)
}

// tapTemplate: a tap without ifname=: QEMU asks the kernel for the next
// free tapN (TUNSETIFF with the template "tap%d"), the one name kfv
// admits for such a VM, and the interface lives as long as QEMU.
func tapTemplate(t *testing.T, b *benign) {
	needRoot(t)
	args, sock := b.withQMP(append(b.rawLoop("KFV-RAW tap template\n"),
		"-netdev", "tap,id=kfvnet,script=no,downscript=no", "-device", "virtio-net-pci,netdev=kfvnet"))
	p := b.run(args)
	q := dialMon(t, sock, 30*time.Second)
	quit(t, p, q)
}
