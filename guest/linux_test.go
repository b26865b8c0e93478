package guest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os/exec"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParseModinfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		sec  string
		want []string
	}{
		{"none", "license=GPL\x00depends=\x00name=virtio\x00", nil},
		{"several", "alias=x\x00depends=virtio,virtio_ring\x00name=virtio_pci\x00", []string{"virtio", "virtio_ring"}},
		{"dash normalised", "depends=virtio-rng\x00", []string{"virtio_rng"}},
		{"no depends key", "name=foo\x00", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseModinfo([]byte(tc.sec)); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("parseModinfo = %q, want %q", got, tc.want)
			}
		})
	}
}

// debianVirtioDep is modules.dep as depmod writes it for the virtio
// modules of Debian 12's 6.1 kernel (transitive, load-last first).
const debianVirtioDep = `kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
`

func TestModulesDepLoadOrder(t *testing.T) {
	dep, err := parseModulesDep(strings.NewReader(debianVirtioDep))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"single", []string{"virtio_blk"}},
		{"shared deps once", []string{"virtio_pci", "virtio_blk", "virtio_net"}},
		{"dash name", []string{"virtio_rng"}},
		{"all", []string{"virtio_pci", "virtio_blk", "virtio_net", "virtio-rng"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			order, err := dep.LoadOrder(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			pos := map[string]int{}
			for i, p := range order {
				if _, dup := pos[p]; dup {
					t.Fatalf("%s listed twice in %q", p, order)
				}
				pos[p] = i
			}
			for _, w := range tc.want {
				found := false
				for p := range pos {
					found = found || modName(p) == modName(w)
				}
				if !found {
					t.Errorf("%s not in load order %q", w, order)
				}
			}
			// Invariant: every dependency loads before its user.
			for _, p := range order {
				for _, d := range dep[p] {
					if i, ok := pos[d]; !ok || i > pos[p] {
						t.Errorf("%s loads before its dependency %s: %q", p, d, order)
					}
				}
			}
		})
	}
}

func TestModulesDepErrors(t *testing.T) {
	for _, tc := range []struct {
		name, dep string
		want      []string
		errPart   string
	}{
		{"missing module", "a.ko:\n", []string{"b"}, "not in modules.dep"},
		{"missing dependency", "a.ko: b.ko\n", []string{"a"}, "b.ko: not in modules.dep"},
		{"cycle", "a.ko: b.ko\nb.ko: a.ko\n", []string{"a"}, "cycle"},
		{"bad line", "a.ko b.ko\n", nil, "line 1"},
		{"duplicate", "a.ko:\na.ko:\n", nil, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dep, err := parseModulesDep(strings.NewReader(tc.dep))
			if err == nil {
				_, err = dep.LoadOrder(tc.want)
			}
			if err == nil || !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("got error %v, want one containing %q", err, tc.errPart)
			}
		})
	}
}

func TestModulesDepFormatRoundTrip(t *testing.T) {
	dep, err := parseModulesDep(strings.NewReader(debianVirtioDep))
	if err != nil {
		t.Fatal(err)
	}
	again, err := parseModulesDep(bytes.NewReader(dep.Format()))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dep, again) {
		t.Fatalf("round trip changed modules.dep:\n%s", dep.Format())
	}
}

func TestCacheKey(t *testing.T) {
	base := cacheInputs{
		Format: linuxFormat, InitScript: sha256Hex(initScript), Modules: []string{"virtio_pci", "virtio_blk"},
		KernelPackage: "linux-image-6.1.0-56-amd64", KernelVersion: "6.1.192-2", BusyboxVersion: "1:1.35.0-4", Xz: true,
	}
	k := base.key()
	if k != base.key() {
		t.Fatal("key not stable")
	}
	swapped := base
	swapped.Modules = []string{"virtio_blk", "virtio_pci"}
	if swapped.key() != k {
		t.Error("module order changes the key")
	}
	for name, mod := range map[string]func(*cacheInputs){
		"format":  func(c *cacheInputs) { c.Format++ },
		"init":    func(c *cacheInputs) { c.InitScript = sha256Hex([]byte("other")) },
		"modules": func(c *cacheInputs) { c.Modules = []string{"virtio_pci"} },
		"kernel":  func(c *cacheInputs) { c.KernelPackage = "linux-image-6.1.0-57-amd64" },
		"kver":    func(c *cacheInputs) { c.KernelVersion = "6.1.193-1" },
		"busybox": func(c *cacheInputs) { c.BusyboxVersion = "1:1.36" },
		"xz":      func(c *cacheInputs) { c.Xz = false },
	} {
		t.Run(name, func(t *testing.T) {
			c := base
			mod(&c)
			if c.key() == k {
				t.Errorf("changing %s keeps the key", name)
			}
		})
	}
}

func TestLinuxCmdlineAndArgs(t *testing.T) {
	if got, want := LinuxCmdline("disk", "kfv.size=64"), "console=ttyS0 quiet panic=-1 kfv.workload=disk kfv.size=64"; got != want {
		t.Errorf("LinuxCmdline = %q, want %q", got, want)
	}
	l := &Linux{Kernel: "/k/vmlinux", Initrd: "/k/initrd.gz"}
	for _, accel := range []string{"tcg", "kvm"} {
		t.Run(accel, func(t *testing.T) {
			args := LinuxArgs(l, accel, "boot")
			get := func(flag string) string {
				i := slices.Index(args, flag)
				if i < 0 || i+1 >= len(args) {
					t.Fatalf("%s missing in %q", flag, args)
				}
				return args[i+1]
			}
			if get("-accel") != accel || get("-kernel") != l.Kernel || get("-initrd") != l.Initrd {
				t.Errorf("args %q", args)
			}
			if !strings.Contains(get("-append"), "kfv.workload=boot") {
				t.Errorf("-append %q lacks the workload", get("-append"))
			}
			if !slices.Contains(args, "-no-reboot") {
				t.Error("-no-reboot missing: a panicking guest would loop")
			}
			if accel == "kvm" && get("-cpu") != "host,-arch-capabilities" {
				t.Errorf("kvm -cpu %q", get("-cpu"))
			}
		})
	}
}

func TestLinuxAccel(t *testing.T) {
	for _, tc := range []struct{ env, want string }{{"", "tcg"}, {"tcg", "tcg"}, {"kvm", "kvm"}, {" kvm ", "kvm"}, {"hvf", ""}} {
		t.Run(fmt.Sprintf("%q", tc.env), func(t *testing.T) {
			t.Setenv(LinuxAccelEnv, tc.env)
			got, err := LinuxAccel()
			if tc.want == "" {
				if err == nil {
					t.Fatalf("LinuxAccel = %q, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("LinuxAccel = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestParseMarkers(t *testing.T) {
	out := "[    2.6] random kernel line\r\n" +
		"KFV-BOOTED ms=2430\n" +
		"KFV-WARN insmod x failed\n" +
		"[ 3.0] virtio_blk virtio1: 1/0/0 KFV-RESULT workload=disk status=ok bytes=67108864 write_ms=812\n" +
		"KFV-DONE\n"
	m, err := ParseMarkers([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Booted || m.BootedMS != 2430 || !m.Done || m.Workload != "disk" || m.Status != "ok" ||
		m.Result["bytes"] != "67108864" || m.Result["write_ms"] != "812" || len(m.Warnings) != 1 {
		t.Fatalf("ParseMarkers = %+v", m)
	}
	if _, err := ParseMarkers([]byte("KFV-BOOTED ms=x\n")); err == nil {
		t.Error("bad ms accepted")
	}
	m, err = ParseMarkers([]byte("no markers\n"))
	if err != nil || m.Booted || m.Done || m.Result != nil {
		t.Errorf("empty output: %+v, %v", m, err)
	}
}

// readCPIO parses a newc archive into name -> (mode, body).
func readCPIO(t *testing.T, b []byte) map[string][2]string {
	t.Helper()
	files := map[string][2]string{}
	for off := 0; ; {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad cpio header at %d", off)
		}
		field := func(i int) int {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
		mode, size, nameSize := field(1), field(6), field(11)
		name := string(b[off+110 : off+110+nameSize-1])
		off = (off + 110 + nameSize + 3) &^ 3
		body := string(b[off : off+size])
		off = (off + size + 3) &^ 3
		if name == "TRAILER!!!" {
			return files
		}
		files[name] = [2]string{strconv.FormatInt(int64(mode), 8), body}
	}
}

func TestCPIOWriter(t *testing.T) {
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	c.Dir("dev", 0o755)
	c.CharDev("dev/console", 0o600, 5, 1)
	c.File("init", 0o755, []byte("#!/bin/sh\n"))
	c.Symlink("bin/sh", "busybox")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d not a multiple of 4", buf.Len())
	}
	got := readCPIO(t, buf.Bytes())
	want := map[string][2]string{
		"dev":         {"40755", ""},
		"dev/console": {"20600", ""},
		"init":        {"100755", "#!/bin/sh\n"},
		"bin/sh":      {"120777", "busybox"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("archive = %v, want %v", got, want)
	}
	if cpio, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command(cpio, "-t", "--quiet")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "dev/console") {
			t.Errorf("cpio -t: %v\n%s", err, out)
		}
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n -= len(p); f.n < 0 {
		return 0, io.ErrShortWrite
	}
	return len(p), nil
}

func TestCPIOWriterError(t *testing.T) {
	c := newCPIOWriter(&failWriter{n: 200})
	c.File("init", 0o755, make([]byte, 1000))
	if err := c.Close(); err == nil {
		t.Fatal("Close succeeded after a failed write")
	}
}

func TestBzPayload(t *testing.T) {
	img := make([]byte, 4096)
	img[0x1f1] = 2 // setup sectors: protected-mode code at 3*512
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x20f)
	binary.LittleEndian.PutUint32(img[0x248:], 100)
	binary.LittleEndian.PutUint32(img[0x24c:], 6)
	copy(img[3*512+100:], xzMagic)
	p, err := bzPayload(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, xzMagic) {
		t.Fatalf("payload % x, want % x", p, xzMagic)
	}
	binary.LittleEndian.PutUint32(img[0x24c:], 1<<20)
	if _, err := bzPayload(img); err == nil {
		t.Error("payload past the end accepted")
	}
	if _, err := bzPayload(make([]byte, 4096)); err == nil {
		t.Error("image without HdrS accepted")
	}
}

func TestInitScriptSyntax(t *testing.T) {
	sh, err := exec.LookPath("busybox")
	args := []string{"sh", "-n"}
	if err != nil {
		if sh, err = exec.LookPath("sh"); err != nil {
			t.Skip("no sh in PATH")
		}
		args = []string{"-n"}
	}
	cmd := exec.Command(sh, args...)
	cmd.Stdin = bytes.NewReader(initScript)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("init.sh: %v\n%s", err, out)
	}
}
