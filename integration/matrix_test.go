package integration

// The benign matrix: the configurations operators write (disks and their
// formats, caches and AIO engines, controllers, NICs, displays, chardevs,
// monitors, shares, devices, memory backends, process options), each run
// bare first, to show that it works (QEMU exits as expected, the guest
// finished its workload and its data checks out where it does I/O), then
// under kfv-run in enforce mode with the built-in profile: the same
// outcome, with no denial, no error, no reaction and no finding of
// medium severity or above in the event stream (benign.run).
//
// The Linux guest (TCG) runs where the guest must do I/O through the
// configuration; the raw-code guest under KVM where what matters is what
// QEMU opens and sets up (chardevs, monitors, VNC, memory backends,
// process options). Two QEMUs run at a time (matrixSlots).

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/guest"
)

// matrixSlots bounds the QEMUs the matrix runs at once: one per core of
// the 2-core machines the suite is sized for, whatever -parallel says.
var matrixSlots = make(chan struct{}, 2)

// matrixRow is one configuration; run starts it with b.run (bare or under
// kfv-run, as b.bare says) and checks its outcome.
type matrixRow struct {
	name string
	run  func(t *testing.T, b *benign)
}

func TestBenignMatrix(t *testing.T) {
	rows := matrixRows()
	if len(rows) < 30 {
		t.Fatalf("the matrix has %d rows, want at least 30", len(rows))
	}
	began := time.Now()
	t.Cleanup(func() {
		t.Logf("%d configurations, bare and under kfv, in %v", len(rows), time.Since(began).Round(time.Second))
	})
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			for _, mode := range []string{"bare", "kfv"} {
				t.Run(mode, func(t *testing.T) {
					t.Parallel()
					matrixSlots <- struct{}{}
					defer func() { <-matrixSlots }()
					b := newBenign(t)
					b.bare = mode == "bare"
					r.run(t, b)
				})
			}
		})
	}
}

func matrixRows() []matrixRow {
	rows := []matrixRow{
		// Images and their formats.
		{"raw-cache-writeback-aio-threads", disk(diskSpec{drive: "cache=writeback,aio=threads"})},
		{"qcow2", disk(diskSpec{format: "qcow2"})},
		{"qcow2-backing-chain", disk(diskSpec{format: "qcow2", backing: true})},
		{"qcow2-snapshot-on", disk(diskSpec{format: "qcow2", backing: true, drive: "snapshot=on"})},
		{"blockdev-chain", disk(diskSpec{format: "qcow2", backing: true, blockdev: true})},
		// Caches and AIO engines (aio=native needs cache.direct=on: QEMU
		// refuses it with cache=writeback).
		{"cache-none-aio-threads", disk(diskSpec{drive: "cache=none,aio=threads"})},
		{"cache-none-aio-native", disk(diskSpec{drive: "cache=none,aio=native"})},
		{"cache-none-aio-io_uring", disk(diskSpec{drive: "cache=none,aio=io_uring"})},
		{"cache-writeback-aio-io_uring", disk(diskSpec{drive: "cache=writeback,aio=io_uring"})},
		{"qcow2-chain-cache-none-aio-native", disk(diskSpec{format: "qcow2", backing: true, drive: "cache=none,aio=native"})},
		// Controllers.
		{"ide", disk(diskSpec{machine: "pc", ifType: "ide", dev: "sda"})},
		{"ahci-sata", disk(diskSpec{device: []string{"-device", "ide-hd,drive=kfvdisk,bus=ide.0"}, dev: "sda"})},
		{"virtio-scsi", disk(diskSpec{device: []string{"-device", "virtio-scsi-pci,id=kfvscsi", "-device", "scsi-hd,drive=kfvdisk,bus=kfvscsi.0"}, dev: "sda"})},
		{"nvme", disk(diskSpec{device: []string{"-device", "nvme,drive=kfvdisk,serial=kfv0001"}, dev: "nvme0n1"})},
		{"floppy", disk(diskSpec{machine: "pc", ifType: "floppy", dev: "fd0", mib: 1, size: 1440 << 10})},
		{"usb-storage", disk(diskSpec{device: []string{"-device", "qemu-xhci,id=kfvxhci", "-device", "usb-storage,drive=kfvdisk,bus=kfvxhci.0", "-device", "usb-tablet,bus=kfvxhci.0"}, dev: "sda"})},
		{"q35-pcie-root-ports", disk(diskSpec{device: []string{
			"-device", "pcie-root-port,id=kfvrp1,bus=pcie.0,chassis=1,slot=1",
			"-device", "pcie-root-port,id=kfvrp2,bus=pcie.0,chassis=2,slot=2",
			"-device", "virtio-blk-pci,drive=kfvdisk,bus=kfvrp1",
			"-device", "virtio-rng-pci,bus=kfvrp2"}})},
		{"cdrom-medium-change", func(t *testing.T, b *benign) { testCDROM(t, b, "path") }},
		// NICs.
		{"nic-user", func(t *testing.T, b *benign) {
			b.netRun(guest.NetArgs(), 4, "127.0.0.1:0", "10.0.2.2", "10.0.2.15")
		}},
		{"nic-socket", nicSocket},
		{"nic-tap-fd", nicTapFD},
		{"nic-tap-ifname", func(t *testing.T, b *benign) { nicTapName(t, b, false) }},
		{"nic-tap-vhost", func(t *testing.T, b *benign) { nicTapName(t, b, true) }},
		{"nic-tap-hotplug-multiqueue", tapHotplug},
		{"nic-tap-no-ifname", tapTemplate},
		// Display, chardevs, monitors.
		{"vnc-loopback", vncLoopback},
		{"chardev-pty", chardevPty},
		{"chardev-file", chardevFile},
		{"chardev-socket-unix-server", chardevUnixServer},
		{"chardev-socket-tcp-client", chardevTCPClient},
		{"chardev-socket-tcp-server", chardevTCPServer},
		{"nic-user-hostfwd", userHostfwd},
		{"incoming-tcp", incomingTCP(false)},
		{"incoming-tcp-qmp", incomingTCP(true)},
		{"monitor-qmp", monitorQMP},
		{"vcpu-hotplug", vcpuHotplug},
		{"memory-hotplug", memoryHotplug},
		{"module-on-demand", moduleOnDemand},
		{"monitor-hmp", monitorHMP},
		// Shares and devices.
		{"9p-read-only", func(t *testing.T, b *benign) { share9p(t, b, true) }},
		{"9p-writable", func(t *testing.T, b *benign) { share9p(t, b, false) }},
		{"virtio-rng", func(t *testing.T, b *benign) {
			args := append(b.args(guest.WorkloadRNG), "-object", "rng-random,id=kfvrng,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=kfvrng")
			p := b.run(args)
			m := b.wantDone(p, p.wait(t, 2*time.Minute), guest.WorkloadRNG)
			t.Logf("guest read %s distinct byte values from %s", m.Result["distinct"], m.Result["rng"])
		}},
		{"virtio-balloon", balloon},
		// Memory backends.
		{"memory-memfd-shared", memBackend(memSpec{object: "memory-backend-memfd,share=on", backing: "memfd:memory-backend-memfd"})},
		{"memory-memfd-private", memBackend(memSpec{object: "memory-backend-memfd,share=off", backing: "memfd:memory-backend-memfd"})},
		{"memory-file-in-dir-private", memBackend(memSpec{object: "memory-backend-file,share=off", memPath: "dir"})},
		{"memory-file-shared", memBackend(memSpec{object: "memory-backend-file,share=on", memPath: "file"})},
		{"memory-hugetlbfs-shared", memBackend(memSpec{object: "memory-backend-file,share=on", memPath: "hugetlbfs"})},
		{"numa-2-nodes-2-vcpus", numaNodes},
		{"numa-file-backends-2-vcpus", numaFileNodes},
		// Process options.
		{"daemonize-pidfile", daemonizeRow},
		{"sandbox-on", sandboxOn},
		{"runas", runAs},
		{"unprivileged", unprivileged},
	}
	return rows
}

// diskSpec is a disk configuration for the disk workload.
type diskSpec struct {
	format   string   // raw (default) or qcow2
	backing  bool     // qcow2 on a qcow2 backing file, which must be left as it was
	drive    string   // more -drive options (cache=, aio=, snapshot=)
	blockdev bool     // -blockdev nodes (file, qcow2, the backing's) instead of -drive
	ifType   string   // -drive if= (ide, floppy) instead of a -device
	device   []string // the devices for drive kfvdisk; default virtio-blk-pci
	dev      string   // the disk's name in the guest; default vda
	machine  string   // default q35
	mib      int      // MiB the guest writes and reads back; default 4
	size     int64    // image size; default 16 MiB
}

// disk runs the disk workload on spec's disk: the guest's read-back
// checksum and the image on the host (through qemu-img for qcow2) must
// both be the pattern's, but with snapshot=on, where the image must be
// as it was; a backing file must be as it was.
func disk(spec diskSpec) func(t *testing.T, b *benign) {
	return func(t *testing.T, b *benign) {
		if spec.mib == 0 {
			spec.mib = 4
		}
		if spec.size == 0 {
			spec.size = 16 << 20
		}
		if spec.format == "" {
			spec.format = "raw"
		}
		if spec.dev == "" {
			spec.dev = "vda"
		}
		img := b.path("disk." + spec.format)
		var base string
		switch {
		case spec.format == "raw":
			if err := os.WriteFile(img, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, spec.size); err != nil {
				t.Fatal(err)
			}
		case spec.backing:
			base = b.path("base.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", base, strconv.FormatInt(spec.size, 10))
			// Data of the base's own, past what the guest writes: the
			// top image must show it through the chain.
			qemuIO(t, base, fmt.Sprintf("write -P 0x5a %d 1M", spec.size-(2<<20)))
			qemuImg(t, "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", img)
		default:
			qemuImg(t, "create", "-q", "-f", "qcow2", img, strconv.FormatInt(spec.size, 10))
		}
		before := fileSHA256(t, img, fileSize(t, img))
		var baseBefore string
		if base != "" {
			baseBefore = fileSHA256(t, base, fileSize(t, base))
		}

		args := b.args(guest.WorkloadDisk, fmt.Sprintf("kfv.size=%d", spec.mib), "kfv.dev="+spec.dev)
		if spec.machine != "" {
			args = replaceArg(args, "-machine", spec.machine)
		}
		switch {
		case spec.blockdev:
			args = append(args,
				"-blockdev", "driver=file,node-name=kfvbasefile,filename="+base+",read-only=on",
				"-blockdev", "driver=qcow2,node-name=kfvbase,file=kfvbasefile,read-only=on",
				"-blockdev", "driver=file,node-name=kfvtopfile,filename="+img,
				"-blockdev", "driver=qcow2,node-name=kfvdisk,file=kfvtopfile,backing=kfvbase")
		case spec.ifType != "":
			args = append(args, "-drive", fmt.Sprintf("file=%s,format=%s,if=%s", img, spec.format, spec.ifType))
		default:
			d := fmt.Sprintf("file=%s,format=%s,if=none,id=kfvdisk", img, spec.format)
			if spec.drive != "" {
				d += "," + spec.drive
			}
			args = append(args, "-drive", d)
		}
		if spec.ifType == "" {
			dev := spec.device
			if dev == nil {
				dev = []string{"-device", "virtio-blk-pci,drive=kfvdisk"}
			}
			args = append(args, dev...)
		}
		p := b.run(args)
		m := b.wantDone(p, p.wait(t, 3*time.Minute), guest.WorkloadDisk)
		want := guest.PatternSHA256(spec.mib)
		if m.Result["sha256"] != want {
			t.Errorf("guest read back sha256 %s from /dev/%s, want the pattern's %s", m.Result["sha256"], spec.dev, want)
		}
		if strings.Contains(spec.drive, "snapshot=on") {
			if got := fileSHA256(t, img, fileSize(t, img)); got != before {
				t.Errorf("snapshot=on: the image changed on the host (sha256 %s, was %s)", got, before)
			}
		} else if got := guestView(t, img, spec.format, int64(spec.mib)<<20, 0); got != want {
			t.Errorf("the image on the host holds sha256 %s where the guest wrote, want %s", got, want)
		}
		if base != "" {
			if got := fileSHA256(t, base, fileSize(t, base)); got != baseBefore {
				t.Errorf("the backing file changed (sha256 %s, was %s)", got, baseBefore)
			}
			if !strings.Contains(spec.drive, "snapshot=on") {
				// The base's data, read through the top image.
				if got, want := guestView(t, img, spec.format, 1<<20, spec.size-(2<<20)), sha256Hex(bytes.Repeat([]byte{0x5a}, 1<<20)); got != want {
					t.Errorf("the chain does not show the backing file's data: sha256 %s, want %s", got, want)
				}
			}
		}
		t.Logf("write %s ms, read %s ms", m.Result["write_ms"], m.Result["read_ms"])
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func qemuImg(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func qemuIO(t *testing.T, img, cmd string) {
	t.Helper()
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", cmd, img).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io %s: %v\n%s", cmd, err, out)
	}
}

// guestView is the sha256 of n bytes at off of what the guest sees on
// the image (qcow2 read through its chain by qemu-img).
func guestView(t *testing.T, img, format string, n, off int64) string {
	t.Helper()
	raw := img
	if format != "raw" {
		raw = img + ".raw"
		qemuImg(t, "convert", "-f", format, "-O", "raw", img, raw)
		defer os.Remove(raw)
	}
	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("read %s: %v", raw, err)
	}
	return sha256Hex(b)
}

// ---------------------------------------------------------------------------
// NICs: the guest sends the pattern to a listener on this host.

// needRoot skips a row that makes network interfaces.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("makes tap interfaces on the host: needs root")
	}
}

// tapSubnet numbers the host subnets (10.77.N.0/24) and interfaces of
// the tap rows, one per run.
var tapSubnet atomic.Int32

// hostNet is a tap interface on the host: its name, the host's address
// on it and the guest's.
type hostNet struct{ name, host, guest string }

func newHostNet(t *testing.T) hostNet {
	n := tapSubnet.Add(1)
	return hostNet{name: fmt.Sprintf("kfvm%d-%d", os.Getpid()%10000, n), host: fmt.Sprintf("10.77.%d.1", n), guest: fmt.Sprintf("10.77.%d.2", n)}
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// up gives the interface the host's address and takes it up.
func (h hostNet) up(t *testing.T) {
	t.Helper()
	ipCmd(t, "addr", "add", h.host+"/24", "dev", h.name)
	ipCmd(t, "link", "set", h.name, "up")
}

// openTap opens /dev/net/tun as tap h.name (IFF_TAP|IFF_NO_PI, and
// IFF_VNET_HDR as libvirt asks for it when vnetHdr is set): the
// interface lives as long as the file.
func openTap(t *testing.T, name string, vnetHdr bool) *os.File {
	t.Helper()
	// Opened blocking and handed to Go's poller only once it is a tap:
	// a tun fd without an interface cannot be polled.
	fd, err := syscall.Open("/dev/net/tun", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/net/tun: %v", err)
	}
	const (
		tunSetIff  = 0x400454ca
		iffTap     = 0x0002
		iffNoPI    = 0x1000
		iffVnetHdr = 0x4000
	)
	var ifr [40]byte
	copy(ifr[:16], name)
	flags := uint16(iffTap | iffNoPI)
	if vnetHdr {
		flags |= iffVnetHdr
	}
	binary.LittleEndian.PutUint16(ifr[16:], flags)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), tunSetIff, uintptr(unsafe.Pointer(&ifr[0]))); errno != 0 {
		syscall.Close(fd)
		t.Fatalf("TUNSETIFF %s: %v", name, errno)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun")
	t.Cleanup(func() { f.Close() })
	return f
}

func tapNetArgs(netdev string) []string {
	return []string{"-netdev", netdev, "-device", "virtio-net-pci,netdev=kfvnet"}
}

// nicTapFD: a tap the manager made, handed to QEMU as fd 3 (libvirt's
// way).
func nicTapFD(t *testing.T, b *benign) {
	needRoot(t)
	h := newHostNet(t)
	tap := openTap(t, h.name, true)
	h.up(t)
	b.netRun(tapNetArgs("tap,id=kfvnet,fd=3"), 4, h.host+":0", h.host, h.guest, tap)
}

// nicTapName: a persistent tap the operator made, which QEMU opens by
// name as root, with no scripts; with vhost, the data path is the
// kernel's vhost-net.
func nicTapName(t *testing.T, b *benign, vhost bool) {
	needRoot(t)
	netdev := "tap,id=kfvnet,ifname=%s,script=no,downscript=no"
	if vhost {
		if _, err := os.Stat("/dev/vhost-net"); err != nil {
			t.Skipf("this kernel has no vhost-net (%v): QEMU refuses vhost=on without it", err)
		}
		netdev += ",vhost=on"
	}
	h := newHostNet(t)
	ipCmd(t, "tuntap", "add", "dev", h.name, "mode", "tap")
	t.Cleanup(func() { exec.Command("ip", "link", "del", h.name).Run() })
	h.up(t)
	b.netRun(tapNetArgs(fmt.Sprintf(netdev, h.name)), 4, h.host+":0", h.host, h.guest)
}

// nicSocket: -netdev socket connects to a peer on this host's loopback,
// which the test is: it forwards the frames (QEMU's stream framing, a
// 32-bit big-endian length before each) to and from a tap of its own, so
// that the guest reaches the host's TCP stack through the socket.
func nicSocket(t *testing.T, b *benign) {
	needRoot(t)
	h := newHostNet(t)
	tap := openTap(t, h.name, false)
	h.up(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var toGuest, fromGuest atomic.Int64
	t.Cleanup(func() { t.Logf("relayed %d frames to the guest, %d from it", toGuest.Load(), fromGuest.Load()) })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		go func() {
			buf := make([]byte, 65536)
			for {
				n, err := tap.Read(buf)
				if err != nil {
					t.Logf("tap read: %v", err)
					return
				}
				toGuest.Add(1)
				var l [4]byte
				binary.BigEndian.PutUint32(l[:], uint32(n))
				if _, err := c.Write(append(l[:], buf[:n]...)); err != nil {
					return
				}
			}
		}()
		rd := bufio.NewReader(c)
		for {
			var l [4]byte
			if _, err := io.ReadFull(rd, l[:]); err != nil {
				return
			}
			frame := make([]byte, binary.BigEndian.Uint32(l[:]))
			if _, err := io.ReadFull(rd, frame); err != nil {
				return
			}
			fromGuest.Add(1)
			if _, err := tap.Write(frame); err != nil {
				t.Logf("tap write: %v", err)
				return
			}
		}
	}()
	b.netRun(tapNetArgs("socket,id=kfvnet,connect="+ln.Addr().String()), 4, h.host+":0", h.host, h.guest)
}

// ---------------------------------------------------------------------------
// Raw-code guests under KVM: what QEMU opens and sets up.

// rawArgs is the raw-code guest for opts under KVM, named as the Linux
// guest is; the row skips without KVM.
func (b *benign) rawArgs(opts guest.RawOptions) []string {
	b.t.Helper()
	if p := kvmProblem(); p != "" {
		b.t.Skip(p)
	}
	return append(guest.RawArgs(rawGuest(b.t, opts), "kvm"), "-name", "guest=kfv-benign,debug-threads=on")
}

// rawLoop is the loop guest: it prints msg, then a tick line about
// every half second until QEMU is told to quit.
func (b *benign) rawLoop(msg string) []string {
	return b.rawArgs(guest.RawOptions{Loop: true, Message: msg, TicksPerLine: 9})
}

// rawExit is the guest that prints msg and exits at once with status
// guest.RawExitStatus(matrixExit).
func (b *benign) rawExit(msg string) []string {
	return b.rawArgs(guest.RawOptions{Message: msg, ExitCode: matrixExit})
}

const matrixExit = 21

// wantRawExit checks that QEMU exited as the raw guest told it to.
func wantRawExit(t *testing.T, p *proc, st int) {
	t.Helper()
	if want := guest.RawExitStatus(matrixExit); st != want {
		t.Fatalf("QEMU exited %d, want %d (the guest's isa-debug-exit)\nstdout:\n%s\nstderr:\n%s", st, want, tail(p.stdout.String(), 20), p.stderr)
	}
}

// withQMP adds a QMP monitor on a unix socket and returns its path.
func (b *benign) withQMP(args []string) ([]string, string) {
	sock := b.path(fmt.Sprintf("qmp-%d.sock", b.runs))
	return append(args, "-qmp", "unix:"+sock+",server=on,wait=off"), sock
}

// quit ends the VM over QMP; QEMU must exit 0.
func quit(t *testing.T, p *proc, q *qmpMon) {
	t.Helper()
	if st, err := q.started(); err != nil || st != "running" {
		t.Errorf("VM status %q (%v) before quit, want running", st, err)
	}
	if _, err := q.exec("quit", nil); err != nil && !strings.Contains(err.Error(), "closed") {
		t.Logf("quit: %v", err)
	}
	if st := p.wait(t, 30*time.Second); st != 0 {
		t.Errorf("QEMU exited %d after quit, want 0\nstderr:\n%s", st, p.stderr)
	}
}

// withSerial replaces the raw guest's -serial stdio.
func withSerial(args []string, serial string) []string {
	return replaceArg(args, "-serial", serial)
}

// readUntil reads r until it has shown want, within timeout; it returns
// what it read.
func readUntil(r io.Reader, want string, timeout time.Duration) (string, bool) {
	got := make(chan string, 1)
	var buf lockedBuffer
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			buf.Write(b[:n])
			if strings.Contains(buf.String(), want) || err != nil {
				got <- buf.String()
				return
			}
		}
	}()
	select {
	case s := <-got:
		return s, strings.Contains(s, want)
	case <-time.After(timeout):
		return buf.String(), false
	}
}

func vncLoopback(t *testing.T, b *benign) {
	var display int
	for display = 100; display < 200; display++ {
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 5900+display)); err == nil {
			ln.Close()
			break
		}
	}
	args, sock := b.withQMP(append(b.rawLoop("KFV-RAW vnc\n"), "-device", "VGA", "-vnc", fmt.Sprintf("127.0.0.1:%d", display)))
	p := b.run(args)
	q := dialMon(t, sock, 30*time.Second)
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", 5900+display), 10*time.Second)
	if err != nil {
		t.Fatalf("connect to VNC: %v\nstderr:\n%s", err, p.stderr)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	w, h, err := rfbHandshake(c)
	if err != nil {
		t.Fatalf("VNC: %v\nstderr:\n%s", err, p.stderr)
	}
	// One full update, which the VNC worker thread encodes.
	req := []byte{3, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(req[6:], w)
	binary.BigEndian.PutUint16(req[8:], h)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 4)
	if _, err := io.ReadFull(c, hdr); err != nil || hdr[0] != 0 {
		t.Fatalf("VNC update: %v %x, want a FramebufferUpdate", err, hdr)
	}
	t.Logf("VNC %dx%d, an update of %d rectangles", w, h, binary.BigEndian.Uint16(hdr[2:]))
	quit(t, p, q)
}

// rfbHandshake speaks RFB 3.8 with no authentication up to ServerInit
// and returns the framebuffer's size.
func rfbHandshake(c net.Conn) (w, h uint16, err error) {
	ver := make([]byte, 12)
	if _, err = io.ReadFull(c, ver); err != nil {
		return 0, 0, fmt.Errorf("version: %w", err)
	}
	if !bytes.HasPrefix(ver, []byte("RFB 003.")) {
		return 0, 0, fmt.Errorf("version %q", ver)
	}
	if _, err = c.Write([]byte("RFB 003.008\n")); err != nil {
		return 0, 0, err
	}
	n := make([]byte, 1)
	if _, err = io.ReadFull(c, n); err != nil || n[0] == 0 {
		return 0, 0, fmt.Errorf("security types: %v (count %d)", err, n[0])
	}
	types := make([]byte, n[0])
	if _, err = io.ReadFull(c, types); err != nil || !bytes.Contains(types, []byte{1}) {
		return 0, 0, fmt.Errorf("security types %v (%v): want None", types, err)
	}
	if _, err = c.Write([]byte{1, 1}); err != nil { // None, then ClientInit shared
		return 0, 0, err
	}
	res := make([]byte, 4)
	if _, err = io.ReadFull(c, res); err != nil || binary.BigEndian.Uint32(res) != 0 {
		return 0, 0, fmt.Errorf("security result %x (%v)", res, err)
	}
	si := make([]byte, 24)
	if _, err = io.ReadFull(c, si); err != nil {
		return 0, 0, fmt.Errorf("ServerInit: %w", err)
	}
	name := make([]byte, binary.BigEndian.Uint32(si[20:]))
	if _, err = io.ReadFull(c, name); err != nil {
		return 0, 0, fmt.Errorf("ServerInit name: %w", err)
	}
	return binary.BigEndian.Uint16(si), binary.BigEndian.Uint16(si[2:]), nil
}

// chardevPty: the serial port on a pty, which the test opens as a
// terminal program would and reads the guest from.
func chardevPty(t *testing.T, b *benign) {
	args, sock := b.withQMP(append(withSerial(b.rawLoop("KFV-RAW pty\n"), "chardev:kfvpty"), "-chardev", "pty,id=kfvpty"))
	p := b.run(args)
	q := dialMon(t, sock, 30*time.Second)
	r, err := q.exec("query-chardev", nil)
	if err != nil {
		t.Fatal(err)
	}
	var devs []struct{ Label, Filename string }
	if err := json.Unmarshal(r, &devs); err != nil {
		t.Fatal(err)
	}
	var pts string
	for _, d := range devs {
		if d.Label == "kfvpty" {
			pts = strings.TrimPrefix(d.Filename, "pty:")
		}
	}
	if !strings.HasPrefix(pts, "/dev/pts/") {
		t.Fatalf("query-chardev names no pty for kfvpty: %s", r)
	}
	f, err := os.OpenFile(pts, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// QEMU drops output while no one has the pty open: the ticks after
	// the open arrive.
	if out, ok := readUntil(f, "KFV-RAW tick", 20*time.Second); !ok {
		t.Fatalf("read %q from %s, want the guest's ticks", out, pts)
	}
	quit(t, p, q)
}

func chardevFile(t *testing.T, b *benign) {
	log := b.path(fmt.Sprintf("serial-%d.log", b.runs))
	args := append(withSerial(b.rawExit("KFV-RAW file\n"), "chardev:kfvfile"), "-chardev", "file,id=kfvfile,path="+log)
	p := b.run(args)
	wantRawExit(t, p, p.wait(t, time.Minute))
	if got, err := os.ReadFile(log); err != nil || string(got) != "KFV-RAW file\n" {
		t.Errorf("the chardev's file holds %q (%v), want the guest's line", got, err)
	}
}

// chardevUnixServer: QEMU listens on a unix socket and waits for its
// client before it starts the guest.
func chardevUnixServer(t *testing.T, b *benign) {
	sock := b.path(fmt.Sprintf("serial-%d.sock", b.runs))
	args := append(withSerial(b.rawExit("KFV-RAW unix\n"), "chardev:kfvsock"), "-chardev", "socket,id=kfvsock,path="+sock+",server=on,wait=on")
	p := b.run(args)
	var c net.Conn
	var err error
	if !waitFor(20*time.Second, func() bool { c, err = net.Dial("unix", sock); return err == nil }) {
		t.Fatalf("connect to %s: %v\nstderr:\n%s", sock, err, p.stderr)
	}
	defer c.Close()
	out, ok := readUntil(c, "KFV-RAW unix\n", 20*time.Second)
	wantRawExit(t, p, p.wait(t, time.Minute))
	if !ok {
		t.Errorf("read %q from the socket, want the guest's line", out)
	}
}

// chardevTCPClient: QEMU connects to a listener on the host's loopback.
func chardevTCPClient(t *testing.T, b *benign) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().(*net.TCPAddr)
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		s, _ := readUntil(c, "KFV-RAW tcp\n", 30*time.Second)
		got <- s
	}()
	args := append(withSerial(b.rawExit("KFV-RAW tcp\n"), "chardev:kfvtcp"), "-chardev", fmt.Sprintf("socket,id=kfvtcp,host=127.0.0.1,port=%d", addr.Port))
	p := b.run(args)
	wantRawExit(t, p, p.wait(t, time.Minute))
	select {
	case s := <-got:
		if s != "KFV-RAW tcp\n" {
			t.Errorf("the listener received %q, want the guest's line", s)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("QEMU never connected to %s", addr)
	}
}

// monitorQMP: what a management tool asks of a VM over QMP.
func monitorQMP(t *testing.T, b *benign) {
	args, sock := b.withQMP(b.rawLoop("KFV-RAW qmp\n"))
	p := b.run(args)
	q := dialMon(t, sock, 30*time.Second)
	for _, cmd := range []string{"query-version", "query-cpus-fast", "query-block", "query-pci", "query-chardev", "query-memory-devices", "query-kvm"} {
		if _, err := q.exec(cmd, nil); err != nil {
			t.Errorf("%v", err)
		}
	}
	for _, cmd := range []string{"stop", "cont"} {
		if _, err := q.exec(cmd, nil); err != nil {
			t.Errorf("%v", err)
		}
	}
	waitLine(t, p, "KFV-RAW tick", 20*time.Second)
	quit(t, p, q)
}

// vcpuHotplug: a manager plugs a vCPU over QMP (device_add of the model
// query-hotpluggable-cpus names): under kfv the VM may make the vCPUs
// it boots with and one per plug, no more (vm-kvm-create-vcpu).
func vcpuHotplug(t *testing.T, b *benign) {
	args, sock := b.withQMP(append(b.rawLoop("KFV-RAW vcpu\n"), "-smp", "1,maxcpus=2"))
	p := b.run(args)
	q := dialMon(t, sock, 30*time.Second)
	waitLine(t, p, "KFV-RAW tick", 20*time.Second)
	raw, err := q.exec("query-hotpluggable-cpus", nil)
	if err != nil {
		t.Fatal(err)
	}
	var slots []struct {
		Type    string         `json:"type"`
		Props   map[string]any `json:"props"`
		QOMPath string         `json:"qom-path"`
	}
	if err := json.Unmarshal(raw, &slots); err != nil {
		t.Fatal(err)
	}
	var plug map[string]any
	for _, s := range slots {
		if s.QOMPath == "" {
			plug = map[string]any{"driver": s.Type, "id": "kfvcpu1"}
			for k, v := range s.Props {
				plug[k] = v
			}
			break
		}
	}
	if plug == nil {
		t.Fatalf("no free vCPU slot in %s", raw)
	}
	if _, err := q.exec("device_add", plug); err != nil {
		t.Fatalf("device_add %v: %v\nstderr:\n%s", plug, err, p.stderr)
	}
	raw, err = q.exec("query-cpus-fast", nil)
	if err != nil {
		t.Fatal(err)
	}
	var cpus []json.RawMessage
	if err := json.Unmarshal(raw, &cpus); err != nil || len(cpus) != 2 {
		t.Errorf("query-cpus-fast after the plug: %s (%v), want 2 vCPUs", raw, err)
	}
	waitLine(t, p, "KFV-RAW tick", 20*time.Second)
	quit(t, p, q)
}

// moduleOnDemand: a manager plugs a device whose model QEMU keeps in a
// module (usb-redir: hw-usb-redirect.so), so QEMU's dynamic loader opens
// and maps the module while the guest runs. Under kfv those executable
// mappings are made after start-up, so each is decided with QEMU held
// still (the events say so), and none is denied.
func moduleOnDemand(t *testing.T, b *benign) {
	args, sock := b.withQMP(append(b.rawLoop("KFV-RAW module\n"),
		"-device", "qemu-xhci,id=kfvxhci", "-chardev", "null,id=kfvredir"))
	p := b.run(args)
	q := dialMon(t, sock, 30*time.Second)
	waitLine(t, p, "KFV-RAW tick", 20*time.Second)
	pid := p.cmd.Process.Pid
	if !b.bare {
		pid = childPID(t, pid)
	}
	const module = "/qemu/hw-usb-redirect.so"
	mapped := func() string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 6 && strings.HasSuffix(f[5], module) && strings.Contains(f[1], "x") {
				return line
			}
		}
		return ""
	}
	if m := mapped(); m != "" {
		t.Fatalf("the module is mapped before the plug (%s): this run would prove nothing", m)
	}
	if _, err := q.exec("device_add", map[string]any{"driver": "usb-redir", "id": "kfvusb", "chardev": "kfvredir", "bus": "kfvxhci.0"}); err != nil {
		t.Fatalf("device_add usb-redir: %v\nstderr:\n%s", err, p.stderr)
	}
	if m := mapped(); m == "" {
		t.Errorf("after the plug no executable mapping of QEMU %d is ...%s", pid, module)
	} else {
		t.Logf("module: %s", m)
	}
	waitLine(t, p, "KFV-RAW tick", 20*time.Second)
	quit(t, p, q)
	if b.bare {
		return
	}
	held := 0
	for _, e := range readEvents(t, b.path(fmt.Sprintf("events-%d.jsonl", b.runs))) {
		if e.Kind == event.KindDecision && e.Syscall == "mmap" && strings.Contains(e.Args, "hw-usb-redirect") && strings.Contains(e.Detail, "threads held still") {
			held++
			t.Logf("%s: %s", e.Args, e.Detail)
		}
	}
	if held == 0 {
		t.Errorf("no executable mapping of the module was decided with QEMU held still")
	}
	t.Logf("%d mmap calls of the module decided with QEMU held still", held)
}

// memoryHotplug: a manager plugs a DIMM over QMP (object-add of a RAM
// backend, device_add pc-dimm): its KVM memory slot lies in a RAM block
// made after kfv sealed the guest RAM, admitted because the backend was
// announced through kfv's monitor proxy.
func memoryHotplug(t *testing.T, b *benign) {
	args := replaceArg(b.rawLoop("KFV-RAW dimm\n"), "-m", "16,slots=2,maxmem=64M")
	args, sock := b.withQMP(args)
	p := b.run(args)
	q := dialMon(t, sock, 30*time.Second)
	waitLine(t, p, "KFV-RAW tick", 20*time.Second)
	if _, err := q.exec("object-add", map[string]any{"qom-type": "memory-backend-ram", "id": "kfvdimm", "size": 16 << 20}); err != nil {
		t.Fatalf("object-add: %v", err)
	}
	if _, err := q.exec("device_add", map[string]any{"driver": "pc-dimm", "id": "kfvdimm0", "memdev": "kfvdimm"}); err != nil {
		t.Fatalf("device_add pc-dimm: %v\nstderr:\n%s", err, p.stderr)
	}
	raw, err := q.exec("query-memory-devices", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "kfvdimm0") {
		t.Errorf("query-memory-devices after the plug: %s", raw)
	}
	waitLine(t, p, "KFV-RAW tick", 20*time.Second)
	quit(t, p, q)
}

// monitorHMP: the human monitor on a unix socket.
func monitorHMP(t *testing.T, b *benign) {
	sock := b.path(fmt.Sprintf("hmp-%d.sock", b.runs))
	args := append(b.rawLoop("KFV-RAW hmp\n"), "-monitor", "unix:"+sock+",server=on,wait=off")
	p := b.run(args)
	// Asked once the guest runs: under kfv it starts only when kfv's
	// own monitor has answered (docs/compatibility.md).
	waitLine(t, p, "KFV-RAW tick", 20*time.Second)
	for cmd, want := range map[string]string{"info status": "running", "info cpus": "CPU #0", "info mtree": "address-space"} {
		out, err := hmpCommand(sock, cmd)
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("HMP %s: %q (%v), want %q in it", cmd, lastLine(out), err, want)
		}
	}
	if _, err := hmpCommand(sock, "quit"); err != nil {
		t.Errorf("HMP quit: %v", err)
	}
	if st := p.wait(t, 30*time.Second); st != 0 {
		t.Errorf("QEMU exited %d after HMP quit, want 0\nstderr:\n%s", st, p.stderr)
	}
}

// ---------------------------------------------------------------------------
// Shares and devices.

// share9p: a host directory exported with 9p (security_model=none, as
// root), read-only or writable; the guest reads the host's file and, if
// it may, writes one back.
func share9p(t *testing.T, b *benign, readOnly bool) {
	dir := b.path(fmt.Sprintf("share-%d", b.runs))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	in := bytes.Repeat([]byte("kfv 9p share\n"), 10000)
	if err := os.WriteFile(filepath.Join(dir, "in"), in, 0o644); err != nil {
		t.Fatal(err)
	}
	if !readOnly {
		// The guest gives files of the share to other owners, which
		// only a root QEMU can do (security_model=none): kfv performs
		// the share's file work with QEMU's own credentials, so QEMU
		// keeps root here.
		b.flags = []string{"--run-as", "root"}
	}
	mib, fsdev := 2, "local,id=kfvfs,path="+dir+",security_model=none"
	if readOnly {
		mib, fsdev = 0, fsdev+",readonly=on"
	}
	args := append(b.args(guest.WorkloadShare, fmt.Sprintf("kfv.size=%d", mib)),
		"-fsdev", fsdev, "-device", "virtio-9p-pci,fsdev=kfvfs,mount_tag="+guest.ShareTag)
	p := b.run(args)
	m := b.wantDone(p, p.wait(t, 2*time.Minute), guest.WorkloadShare)
	if !b.bare && !readOnly {
		sharePerformed(t, b.path(fmt.Sprintf("events-%d.jsonl", b.runs)), dir)
	}
	if m.Result["in"] != sha256Hex(in) {
		t.Errorf("the guest read sha256 %s from the share, want %s", m.Result["in"], sha256Hex(in))
	}
	if readOnly {
		return
	}
	if got := fileSHA256(t, filepath.Join(dir, "out"), int64(mib)<<20); got != guest.PatternSHA256(mib) {
		t.Errorf("the guest's file on the host holds sha256 %s, want the pattern's", got)
	}
	checkShareTree(t, filepath.Join(dir, guest.ShareTree))
}

// sharePerformed checks that kfv performed the share's file work: for
// each kind of call the guest's tree needs (making a directory, renaming,
// linking, making a symlink, changing owner, mode and times) at least one
// allowed decision on a path in the share, and logs them all.
func sharePerformed(t *testing.T, events, dir string) {
	t.Helper()
	kinds := map[string][]string{
		"mkdir": {"mkdir", "mkdirat"}, "rename": {"rename", "renameat", "renameat2"},
		"link": {"link", "linkat"}, "symlink": {"symlink", "symlinkat"},
		"chown": {"chown", "fchownat", "lchown"}, "chmod": {"chmod", "fchmodat", "fchmodat2"},
		"utimes": {"utimensat"}, "unlink": {"unlink", "unlinkat"},
	}
	seen := map[string]int{}
	for _, e := range readEvents(t, events) {
		if e.Kind == event.KindDecision && e.Applied == "allow" && strings.Contains(e.Args, dir) {
			seen[e.Syscall]++
		}
	}
	t.Logf("performed in the share: %v", seen)
	for k, calls := range kinds {
		n := 0
		for _, c := range calls {
			n += seen[c]
		}
		if n == 0 {
			t.Errorf("no %s call (%v) allowed in the share: the guest's tree was not made through kfv", k, calls)
		}
	}
}

// checkShareTree checks, on the host, the tree the share workload left
// (guest.ShareTree): what each of its file calls did.
func checkShareTree(t *testing.T, tree string) {
	t.Helper()
	b := filepath.Join(tree, "b")
	if got, err := os.ReadFile(b); err != nil || string(got) != guest.ShareTreeData {
		t.Errorf("%s: %q, %v; want %q (written, then renamed from a)", b, got, err, guest.ShareTreeData)
	}
	var st unix.Stat_t
	if err := unix.Lstat(b, &st); err != nil {
		t.Fatalf("lstat %s: %v", b, err)
	}
	want, _ := time.Parse(time.RFC3339, guest.ShareTreeTime)
	switch {
	case st.Mode&0o7777 != guest.ShareTreeMode:
		t.Errorf("%s: mode %#o, want %#o (chmod)", b, st.Mode&0o7777, guest.ShareTreeMode)
	case st.Uid != guest.ShareTreeOwner || st.Gid != guest.ShareTreeOwner:
		t.Errorf("%s: owner %d:%d, want %d:%d (chown)", b, st.Uid, st.Gid, guest.ShareTreeOwner, guest.ShareTreeOwner)
	case st.Mtim.Sec != want.Unix():
		t.Errorf("%s: mtime %s, want %s (touch -d)", b, time.Unix(st.Mtim.Sec, 0).UTC(), want)
	case st.Nlink != 1:
		t.Errorf("%s: %d links, want 1 (its hard link removed)", b, st.Nlink)
	}
	if l, err := os.Readlink(filepath.Join(tree, "soft")); err != nil || l != "b" {
		t.Errorf("%s/soft: %q, %v; want a symlink to b", tree, l, err)
	}
	for _, gone := range []string{filepath.Join(tree, "hard"), filepath.Join(tree, "empty"), filepath.Join(tree, "gone"), filepath.Join(filepath.Dir(tree), "kfvdir")} {
		if _, err := os.Lstat(gone); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %v, want it removed or renamed away", gone, err)
		}
	}
}

// balloon: the guest's balloon driver gives memory back when asked.
func balloon(t *testing.T, b *benign) {
	args, sock := b.withQMP(append(b.args(guest.WorkloadIdle, "kfv.seconds=120"), "-device", "virtio-balloon-pci,id=kfvballoon"))
	p := b.run(args)
	q := dialMon(t, sock, 30*time.Second)
	waitLine(t, p, "KFV-BOOTED", 60*time.Second)
	const target = 160 << 20
	if _, err := q.exec("balloon", map[string]any{"value": target}); err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, p.stderr)
	}
	var actual int64
	if !waitFor(60*time.Second, func() bool {
		r, err := q.exec("query-balloon", nil)
		if err != nil {
			t.Fatal(err)
		}
		var v struct{ Actual int64 }
		if err := json.Unmarshal(r, &v); err != nil {
			t.Fatal(err)
		}
		actual = v.Actual
		return actual <= target
	}) {
		t.Fatalf("the guest holds %d MiB after balloon %d MiB\nconsole:\n%s", actual>>20, target>>20, tail(p.stdout.String(), 20))
	}
	t.Logf("balloon: the guest gave memory back down to %d MiB", actual>>20)
	quit(t, p, q)
}

// ---------------------------------------------------------------------------
// Memory backends.

// memSpec is a memory backend for the raw guest's 16 MiB of RAM.
type memSpec struct {
	object  string // the backend and its sharing, without id, size and mem-path
	memPath string // for memory-backend-file: "dir", "file" or "hugetlbfs"
	backing string // what /proc/PID/maps must show backing guest RAM ("" for the mem-path's)
}

// memBackend runs the raw guest on a memory backend and checks, while it
// runs, that QEMU's guest RAM is mapped from that backend.
func memBackend(spec memSpec) func(t *testing.T, b *benign) {
	return func(t *testing.T, b *benign) {
		size := "16M"
		var path string
		want := spec.backing
		switch spec.memPath {
		case "dir":
			path = b.path(fmt.Sprintf("ram-%d", b.runs))
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
			want = path + "/qemu_back_mem.*"
		case "file":
			path = b.path(fmt.Sprintf("ram-%d.img", b.runs))
			want = path
		case "hugetlbfs":
			path = hugetlbfs(t)
			want = path + "/*"
		}
		obj := "id=kfvram,size=" + size
		if path != "" {
			obj += ",mem-path=" + path
		}
		args := b.rawLoop("KFV-RAW memory\n")
		args = replaceArg(args, "-machine", "q35,memory-backend=kfvram")
		args, sock := b.withQMP(append(args, "-object", spec.object+","+obj))
		p := b.run(args)
		q := dialMon(t, sock, 30*time.Second)
		waitLine(t, p, "KFV-RAW tick", 30*time.Second)
		pid := p.cmd.Process.Pid
		if !b.bare {
			pid = childPID(t, pid)
		}
		if m := mapsMatching(t, pid, want); m == "" {
			t.Errorf("no mapping of QEMU %d is backed by %s", pid, want)
		} else {
			t.Logf("guest RAM: %s", m)
		}
		quit(t, p, q)
	}
}

// mapsMatching returns the first line of /proc/PID/maps whose path
// matches the glob pattern ("memfd:NAME" matches "/memfd:NAME (deleted)").
func mapsMatching(t *testing.T, pid int, pattern string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		path := strings.TrimPrefix(f[5], "/")
		if strings.HasPrefix(pattern, "/") {
			path = f[5]
		}
		if ok, _ := filepath.Match(pattern, path); ok {
			return line
		}
	}
	return ""
}

// hugetlbfs mounts a hugetlbfs for the test, with hugepages reserved for
// it; it skips, saying why, when the kernel has none to give.
func hugetlbfs(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting hugetlbfs and reserving hugepages needs root")
	}
	const nr = "/proc/sys/vm/nr_hugepages"
	old, err := os.ReadFile(nr)
	if err != nil {
		t.Skipf("the kernel has no hugepages (%v)", err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(old)))
	// 16 pages of 2 MiB (the guest's 16 MiB and QEMU's ROMs), per run.
	if err := os.WriteFile(nr, []byte(strconv.Itoa(n+16)), 0o644); err != nil {
		t.Skipf("cannot reserve hugepages: %v", err)
	}
	t.Cleanup(func() {
		cur, _ := os.ReadFile(nr)
		c, _ := strconv.Atoi(strings.TrimSpace(string(cur)))
		os.WriteFile(nr, []byte(strconv.Itoa(c-16)), 0o644)
	})
	dir := t.TempDir()
	if err := syscall.Mount("hugetlbfs", dir, "hugetlbfs", 0, "pagesize=2M"); err != nil {
		t.Skipf("mount hugetlbfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// numaNodes: two NUMA nodes, each a memfd backend shared with nothing but
// itself, a vCPU on each; the guest sees both.
func numaNodes(t *testing.T, b *benign) {
	args := replaceArg(replaceArg(b.args(guest.WorkloadTopology), "-smp", "2"), "-m", "256M")
	args = append(args,
		"-object", "memory-backend-memfd,id=kfvnode0,size=128M,share=on",
		"-object", "memory-backend-memfd,id=kfvnode1,size=128M,share=on",
		"-numa", "node,nodeid=0,cpus=0,memdev=kfvnode0",
		"-numa", "node,nodeid=1,cpus=1,memdev=kfvnode1")
	p := b.run(args)
	m := b.wantDone(p, p.wait(t, 2*time.Minute), guest.WorkloadTopology)
	if m.Result["cpus"] != "2" || m.Result["nodes"] != "2" {
		t.Errorf("the guest sees %s CPUs and %s NUMA nodes, want 2 and 2", m.Result["cpus"], m.Result["nodes"])
	}
}

// numaFileNodes: two NUMA nodes backed by memory-backend-file, one a file
// QEMU creates in a directory (private), the other a file of its own
// (shared), a vCPU on each: the Linux guest sees both and finishes its
// workload, and QEMU's guest RAM is mapped from both files.
func numaFileNodes(t *testing.T, b *benign) {
	dir := b.path(fmt.Sprintf("ram-%d", b.runs))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	file := b.path(fmt.Sprintf("ram-%d.img", b.runs))
	args := replaceArg(replaceArg(b.args(guest.WorkloadTopology), "-smp", "2"), "-m", "256M")
	args, sock := b.withQMP(append(args,
		"-object", "memory-backend-file,id=kfvnode0,size=128M,share=off,mem-path="+dir,
		"-object", "memory-backend-file,id=kfvnode1,size=128M,share=on,mem-path="+file,
		"-numa", "node,nodeid=0,cpus=0,memdev=kfvnode0",
		"-numa", "node,nodeid=1,cpus=1,memdev=kfvnode1"))
	p := b.run(args)
	q := dialMon(t, sock, 30*time.Second)
	pid := p.cmd.Process.Pid
	if !b.bare {
		pid = childPID(t, pid)
	}
	for _, want := range []string{dir + "/qemu_back_mem.*", file} {
		if m := mapsMatching(t, pid, want); m == "" {
			t.Errorf("no mapping of QEMU %d is backed by %s", pid, want)
		}
	}
	q.c.Close()
	m := b.wantDone(p, p.wait(t, 3*time.Minute), guest.WorkloadTopology)
	if m.Result["cpus"] != "2" || m.Result["nodes"] != "2" {
		t.Errorf("the guest sees %s CPUs and %s NUMA nodes, want 2 and 2", m.Result["cpus"], m.Result["nodes"])
	}
}

// ---------------------------------------------------------------------------
// Process options.

// daemonizeRow: -daemonize -pidfile as Proxmox starts QEMU. The command
// returns 0 once the daemon is ready; the daemon runs the disk workload
// to its end and exits, taking its pidfile with it.
func daemonizeRow(t *testing.T, b *benign) {
	img := b.path("disk.raw")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	serial := b.path("serial.log")
	pidfile := b.path("qemu.pid")
	qemuReachable(t, filepath.Dir(pidfile))
	args := append(withSerialFile(b.args(guest.WorkloadDisk, "kfv.size=4"), serial), guest.DiskArgs(img, "raw")...)
	args = append(args, "-daemonize", "-pidfile", pidfile)
	p := b.run(args)
	if st := p.wait(t, 2*time.Minute); st != 0 {
		t.Fatalf("exited %d, want 0 once the daemon is ready\nstderr:\n%s", st, p.stderr)
	}
	daemon := readPidfile(t, pidfile)
	supervisor := ppidOf(daemon)
	t.Cleanup(func() { syscall.Kill(daemon, syscall.SIGKILL) })
	if !waitFor(3*time.Minute, func() bool { return !alive(daemon) }) {
		t.Fatalf("the daemon %d did not finish", daemon)
	}
	if !b.bare && !waitFor(20*time.Second, func() bool { return !alive(supervisor) }) {
		t.Errorf("the supervisor %d goes on after the daemon exited", supervisor)
	}
	out, _ := os.ReadFile(serial)
	m, err := guest.ParseMarkers(out)
	if err != nil || m.Status != "ok" || m.Result["sha256"] != guest.PatternSHA256(4) {
		t.Errorf("the daemon's guest reports %+v (%v), want the disk workload done\nconsole:\n%s", m, err, tail(string(out), 20))
	}
	if got := fileSHA256(t, img, 4<<20); got != guest.PatternSHA256(4) {
		t.Errorf("the image holds sha256 %s, want the pattern's", got)
	}
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Errorf("pidfile %s still there after QEMU exited (%v)", pidfile, err)
	}
}

// sandboxOn: QEMU's own seccomp filter, as strict as it gets (libvirt's
// default), under kfv's: the guest runs, QEMU answers QMP, and quits
// when asked, as a managed VM is stopped. (The guest does not power off
// within milliseconds of start-up: QEMU 10.0 with -sandbox on can crash
// in its monitor iothread or hang when it exits while a QMP client is
// still being set up, bare too; kfv's own monitor is such a client.
// docs/compatibility.md, Known gaps.)
func sandboxOn(t *testing.T, b *benign) {
	args := append(b.rawLoop("KFV-RAW sandbox\n"), "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
	args, sock := b.withQMP(args)
	p := b.run(args)
	q := dialMon(t, sock, 30*time.Second)
	waitLine(t, p, "KFV-RAW tick", 30*time.Second)
	if !strings.Contains(p.stdout.String(), "KFV-RAW sandbox") {
		t.Errorf("the guest printed %q, want its line", p.stdout)
	}
	quit(t, p, q)
}

// runAs: QEMU started as root drops to another user once it is set up
// (-runas on 7.2, -run-with user= on 10.0, which has no -runas).
func runAs(t *testing.T, b *benign) {
	if os.Geteuid() != 0 {
		t.Skip("QEMU changes its user only when started as root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	opt := []string{"-runas", "nobody"}
	if qemuMajor >= 10 {
		opt = []string{"-run-with", "user=nobody"}
	}
	args, sock := b.withQMP(append(b.rawLoop("KFV-RAW runas\n"), opt...))
	p := b.run(args)
	q := dialMon(t, sock, 30*time.Second)
	waitLine(t, p, "KFV-RAW tick", 30*time.Second)
	pid := p.cmd.Process.Pid
	if !b.bare {
		pid = childPID(t, pid)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^Uid:\s+` + u.Uid + `\s`).Match(st) {
		t.Errorf("QEMU %d runs as %s, want nobody (%s)", pid, regexp.MustCompile(`(?m)^Uid:.*$`).Find(st), u.Uid)
	}
	quit(t, p, q)
}

// unprivileged: under a root kfv-run, QEMU runs as kfv-qemu (the
// default of --run-as) with every capability set empty, and the VM runs.
func unprivileged(t *testing.T, b *benign) {
	if b.bare {
		t.Skip("QEMU changes no credentials of its own here: the row is kfv's")
	}
	if os.Geteuid() != 0 {
		t.Skip("kfv-run drops QEMU's credentials only when it runs as root")
	}
	u, err := user.Lookup("kfv-qemu")
	if err != nil {
		t.Fatalf("no user kfv-qemu (tools/qemu-user.sh creates it): %v", err)
	}
	args, sock := b.withQMP(b.rawLoop("KFV-RAW unprivileged\n"))
	p := b.run(args)
	q := dialMon(t, sock, 30*time.Second)
	waitLine(t, p, "KFV-RAW tick", 30*time.Second)
	pid := childPID(t, p.cmd.Process.Pid)
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`Uid:\s+` + u.Uid + `\s+` + u.Uid + `\s+` + u.Uid + `\s+` + u.Uid + `\n`, `Gid:\s+` + u.Gid + `\s+` + u.Gid + `\s+` + u.Gid + `\s+` + u.Gid + `\n`}
	for _, c := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		want = append(want, c+`:\s+0000000000000000\n`)
	}
	for _, w := range want {
		if !regexp.MustCompile(`(?m)^` + w).Match(st) {
			t.Errorf("QEMU %d's status does not match %q:\n%s", pid, w, st)
		}
	}
	quit(t, p, q)
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
