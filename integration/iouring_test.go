package integration

// io_uring under kfv: QEMU's aio=io_uring works on the rings kfv makes
// for it (benign), and a payload inside QEMU cannot open, connect or make
// sockets through a ring, neither QEMU's own nor one it makes (attack).
// docs/io_uring.md has the design.

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"kfv/event"
	"kfv/guest"
)

// ioUringDiskArgs attaches image as the guest's /dev/vda on virtio-blk
// with aio=io_uring and the given cache mode, on an IOThread of its own
// when iothread is set (whose event loop also keeps an fd-monitor ring).
func ioUringDiskArgs(image, cache string, iothread bool) []string {
	dev := "virtio-blk-pci,drive=kfvdisk"
	var obj []string
	if iothread {
		obj = []string{"-object", "iothread,id=kfvio"}
		dev += ",iothread=kfvio"
	}
	return append(obj,
		"-drive", fmt.Sprintf("file=%s,format=raw,if=none,id=kfvdisk,cache=%s,aio=io_uring", image, cache),
		"-device", dev,
	)
}

// TestIOURingDisk: the disk workload (32 MiB written with O_DIRECT and
// fsync, read back) on a virtio-blk disk with aio=io_uring, cache=none
// and cache=writeback, in the main loop and on an IOThread, on bare QEMU
// and under kfv-run in enforce mode.
// The guest's checksum and the image on the host must both be the
// pattern's; under kfv the run must hold no denial and no reaction
// (benign.run), and the rings QEMU used must be kfv's.
func TestIOURingDisk(t *testing.T) {
	for _, cfg := range []struct {
		cache    string
		iothread bool
	}{{"none", false}, {"writeback", false}, {"writeback", true}} {
		name := "cache=" + cfg.cache
		if cfg.iothread {
			name += "+iothread"
		}
		for _, mode := range []string{"bare", "kfv"} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				b := newBenign(t)
				const mib = 32
				img := b.path("disk.raw")
				if err := os.WriteFile(img, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(img, mib<<20); err != nil {
					t.Fatal(err)
				}
				args := append(b.args(guest.WorkloadDisk, fmt.Sprintf("kfv.size=%d", mib)), ioUringDiskArgs(img, cfg.cache, cfg.iothread)...)
				var p *proc
				if mode == "kfv" {
					p = b.run(args)
				} else {
					p = start(t, append([]string{b.qemu}, args...))
				}
				m := b.wantDone(p, p.wait(t, 5*time.Minute), guest.WorkloadDisk)
				want := guest.PatternSHA256(mib)
				if m.Result["bytes"] != strconv.Itoa(mib<<20) || m.Result["sha256"] != want {
					t.Errorf("guest read back bytes=%s sha256=%s, want %d and %s", m.Result["bytes"], m.Result["sha256"], mib<<20, want)
				}
				if got := fileSHA256(t, img, mib<<20); got != want {
					t.Errorf("image on the host holds sha256 %s, want %s", got, want)
				}
				t.Logf("write %s ms, read %s ms", m.Result["write_ms"], m.Result["read_ms"])
				if mode == "kfv" {
					rings := kfvRings(readEvents(t, b.path(fmt.Sprintf("events-%d.jsonl", b.runs))))
					// At least the block ring of the main AioContext.
					if len(rings) == 0 {
						t.Errorf("no io_uring_setup performed by kfv in the events: QEMU did its I/O on a ring kfv did not make")
					}
					t.Logf("rings made by kfv: %s", strings.Join(rings, "; "))
				}
			})
		}
	}
}

// kfvRings returns the io_uring_setup decisions whose ring kfv made.
func kfvRings(evs []event.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Kind == event.KindDecision && e.Syscall == "io_uring_setup" && e.Applied == "allow" &&
			strings.Contains(e.Detail, "io_uring ring made by kfv") {
			out = append(out, fmt.Sprintf("tid %d %q %s", e.TID, e.Thread, e.Detail[strings.LastIndex(e.Detail, "emulated:"):]))
		}
	}
	return out
}

func fileSHA256(t *testing.T, path string, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

var uringReportRE = regexp.MustCompile(`^ring=(qemu|own) fd=(-?\d+) thread=(.*) socket=(-?\d+) connect=(-?\d+) openat=(-?\d+)$`)

// TestAttackIOURing runs the implant's io_uring payloads (uring-qemu on
// QEMU's own ring, uring-own on a ring the payload makes with
// io_uring_setup), each from the block worker that saw the trigger and
// from QEMU's main loop, on bare QEMU and under kfv-run. Each submits
// IORING_OP_SOCKET, IORING_OP_CONNECT to a listener of the test's and
// IORING_OP_OPENAT with O_CREAT of a marker. Bare: the marker exists, the
// listener receives the payload's line, the socket is among QEMU's fds.
// Under kfv: none of it, every CQE is -EACCES (the kernel's restriction
// on kfv's ring), nothing of io_uring is denied by the filter (the
// kernel refuses, not kfv), and the VM is unharmed: after the payload,
// QEMU's own I/O through its ring still writes and reads back a pattern
// (HMP qemu-io on the io_uring disk).
//
// The VM's trigger disk is /dev/vda (aio=threads: the implant sees the
// guest's write there); /dev/vdb is the aio=io_uring disk whose ring is
// QEMU's, used by the guest only for its boot-time partition scan, so
// that the ring is idle when the payload uses it (the implant explains
// how it shares the ring with QEMU).
func TestAttackIOURing(t *testing.T) {
	needKfv(t)
	qemu := needQEMU(t)
	if testing.Short() {
		t.Skip("boots QEMU twice per payload: skipped with -short")
	}
	for _, payload := range []string{"uring-qemu", "uring-own"} {
		for _, where := range []string{"device", "main"} {
			t.Run(payload+"/"+where, func(t *testing.T) {
				for _, kfv := range []bool{false, true} {
					name := map[bool]string{false: "bare", true: "kfv"}[kfv]
					t.Run(name, func(t *testing.T) { runURingAttack(t, qemu, payload, where, kfv) })
				}
			})
		}
	}
}

func runURingAttack(t *testing.T, qemu, payload, where string, kfv bool) {
	ringDisk := filepath.Join(t.TempDir(), "ring.raw")
	if err := os.WriteFile(ringDisk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(ringDisk, 16<<20); err != nil {
		t.Fatal(err)
	}
	var run *attackRun
	var ioCheck string
	c := attack{
		name: payload,
		env:  []string{"KFV_IMPLANT_MAIN=1"},
		qargs: []string{
			"-drive", "file=" + ringDisk + ",format=raw,if=none,id=ringdisk,cache=writeback,aio=io_uring",
			"-device", "virtio-blk-pci,drive=ringdisk",
		},
		setup: func(t *testing.T, r *attackRun) (string, effectFunc) {
			run = r
			marker, made := markerFile(r)
			addr, connected := uringListener(t)
			return where + "," + marker + "," + addr, func() (int, int, string) {
				seen, want := 0, 3
				var what []string
				for _, f := range []effectFunc{made, connected, func() (int, int, string) { return uringSocket(r) }} {
					s, _, w := f()
					seen += s
					what = append(what, w)
				}
				ioCheck = qemuIOOnRing(t, r)
				return seen, want, strings.Join(what, "; ")
			}
		},
	}
	runAttack(t, qemu, c, kfv)
	if t.Failed() || run == nil {
		return
	}
	if ioCheck != "" {
		t.Errorf("QEMU's own I/O on its io_uring disk after the payload: %s", ioCheck)
	}
	m := uringReportRE.FindStringSubmatch(run.report.Detail)
	if m == nil {
		t.Fatalf("implant report %q: not ring=... fd=... socket=... connect=... openat=...", run.report.Detail)
	}
	if want := strings.TrimPrefix(payload, "uring-"); m[1] != want {
		t.Errorf("the payload used ring=%s, want %s", m[1], want)
	}
	if !kfv {
		return
	}
	for i, op := range []string{"socket", "connect", "openat"} {
		if m[4+i] != "-13" {
			t.Errorf("under kfv-run IORING_OP_%s got res %s, want -13 (EACCES: the ring's restriction)", strings.ToUpper(op), m[4+i])
		}
	}
	evs := readEvents(t, filepath.Join(run.dir, "events.jsonl"))
	for _, e := range evs {
		if strings.HasPrefix(e.Syscall, "io_uring") && e.Kind == event.KindDecision && e.Verdict == "deny" {
			t.Errorf("io_uring call denied by the filter, want every ring made by kfv and refused in the kernel: %s", dumpEvents([]event.Event{e}))
		}
		if e.Kind == event.KindReaction {
			t.Errorf("reaction in a run whose payload the kernel refused: %s", dumpEvents([]event.Event{e}))
		}
	}
	if payload == "uring-own" {
		// The payload's own ring: its io_uring_setup was performed by kfv,
		// from the payload's thread.
		found := false
		for _, e := range evs {
			found = found || e.Kind == event.KindDecision && e.Syscall == "io_uring_setup" && e.TID == run.report.TID &&
				strings.Contains(e.Detail, "io_uring ring made by kfv")
		}
		if !found && where == "device" {
			t.Errorf("no io_uring_setup by the payload's thread %d made by kfv in the events:\n%s", run.report.TID, dumpEvents(evs))
		}
	}
}

// uringListener listens on the loopback; the effect is the payload's
// line received over its ring-connected socket.
func uringListener(t *testing.T) (string, effectFunc) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	got := &lockedBuffer{}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return // closed by the cleanup
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		got.Write([]byte("connection from " + c.RemoteAddr().String() + ": " + line))
	}()
	return ln.Addr().String(), func() (int, int, string) {
		ok := waitFor(2*time.Second, func() bool { return strings.Contains(got.String(), "kfv-implant uring connect") })
		return one(ok, fmt.Sprintf("listener %s received %q", ln.Addr(), got.String()))
	}
}

// uringSocket checks the socket the payload's IORING_OP_SOCKET returned
// (it leaves it open) among QEMU's fds.
func uringSocket(r *attackRun) (int, int, string) {
	m := uringReportRE.FindStringSubmatch(r.report.Detail)
	if m == nil {
		return 0, 1, "no socket in the implant's report"
	}
	fd, _ := strconv.Atoi(m[4])
	if fd < 0 {
		return 0, 1, "IORING_OP_SOCKET res " + m[4]
	}
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", r.qemuPID, fd))
	return one(err == nil && strings.HasPrefix(l, "socket:"), fmt.Sprintf("QEMU's fd %d -> %q (%v)", fd, l, err))
}

// qemuIOOnRing writes a pattern on the io_uring disk through QEMU's block
// layer (HMP qemu-io, so on QEMU's own ring) and reads it back; "" when
// it checks out, else what went wrong. qemu-io prints on QEMU's stdout.
func qemuIOOnRing(t *testing.T, r *attackRun) string {
	q := dialQMP(t, filepath.Join(r.dir, "qmp.sock"), 20*time.Second)
	defer q.c.Close()
	for _, c := range []struct{ cmd, want string }{
		{`qemu-io ringdisk "write -P 0x5a 64k 64k"`, "wrote 65536/65536 bytes at offset 65536"},
		{`qemu-io ringdisk "read -P 0x5a 64k 64k"`, "read 65536/65536 bytes at offset 65536"},
	} {
		out, err := q.exec("human-monitor-command", map[string]any{"command-line": c.cmd})
		if err != nil {
			return fmt.Sprintf("%s: %v", c.cmd, err)
		}
		if !waitFor(10*time.Second, func() bool { return strings.Contains(r.p.stdout.String(), c.want) }) {
			return fmt.Sprintf("%s: QEMU printed no %q (monitor: %s)\nconsole:\n%s", c.cmd, c.want, out, tail(r.p.stdout.String(), 10))
		}
	}
	if strings.Contains(r.p.stdout.String(), "Pattern verification failed") {
		return "qemu-io read back another pattern"
	}
	return ""
}
