package resources

import (
	"slices"
	"testing"
	"testing/fstest"
)

// TestOverlayDir: where the set says QEMU creates a snapshot=on overlay,
// for QEMU's TMPDIR as QEMU 7.2 and 10.0 both read it (measured with
// strace: unset, empty and /tmp give /var/tmp; any other directory is
// used as it is).
func TestOverlayDir(t *testing.T) {
	for _, tt := range []struct {
		name string
		env  []string
		want string
	}{
		{"no TMPDIR", []string{"HOME=/root"}, "/var/tmp/vl.??????"},
		{"empty TMPDIR", []string{"TMPDIR="}, "/var/tmp/vl.??????"},
		{"TMPDIR=/tmp", []string{"TMPDIR=/tmp"}, "/var/tmp/vl.??????"},
		{"TMPDIR elsewhere", []string{"TMPDIR=/srv/scratch/"}, "/srv/scratch/vl.??????"},
		{"relative TMPDIR", []string{"TMPDIR=tmp"}, "/vm/tmp/vl.??????"},
		{"glob characters quoted", []string{"TMPDIR=/s*[x]"}, `/s\*\[x]/vl.??????`},
		{"the first TMPDIR, as getenv", []string{"TMPDIR=/a", "TMPDIR=/b"}, "/a/vl.??????"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := FromArgsEnv([]string{"-accel", "tcg", "-nic", "none", "-drive", "file=/d.img,format=raw,snapshot=on"}, "/vm", tt.env, fstest.MapFS{})
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"create " + tt.want, "read-only /d.img"}
			if got := fileList(s); !slices.Equal(got, want) {
				t.Errorf("files %q, want %q", got, want)
			}
			for _, f := range s.Files {
				if f.Pattern != (f.Abs == tt.want) {
					t.Errorf("%s: pattern %v", f.Abs, f.Pattern)
				}
			}
		})
	}
}

// TestImageFiles: the files of block nodes are marked Image (file-posix
// probes them), other files are not.
func TestImageFiles(t *testing.T) {
	fsys := chainFS(map[string][]byte{
		"/img/top.qcow2":  qcow2Bytes(qcow2Spec{backing: "base.qcow2"}),
		"/img/base.qcow2": qcow2Bytes(qcow2Spec{}),
	})
	s, err := FromArgs([]string{"-accel", "tcg", "-nic", "none",
		"-drive", "file=/img/top.qcow2,if=none,id=d0,snapshot=on",
		"-blockdev", "driver=file,node-name=f1,filename=/img/raw.img",
		"-pidfile", "/run/q.pid", "-chardev", "file,id=c,path=/log/serial.log",
	}, "/vm", fsys)
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]bool{"/img/top.qcow2": true, "/img/base.qcow2": true, "/img/raw.img": true, "/var/tmp/vl.??????": true}
	for _, f := range s.Files {
		if f.Image != images[f.Abs] {
			t.Errorf("%s (%s): Image=%v, want %v", f.Abs, f.Option, f.Image, images[f.Abs])
		}
		delete(images, f.Abs)
	}
	if len(images) > 0 {
		t.Errorf("not in the set: %v\n%s", images, s)
	}
	n, err := FromQMP("blockdev-create", []byte(`{"job-id":"j","options":{"driver":"file","filename":"/img/new.img","size":1048576}}`), "/vm", fsys)
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Set.Files) != 1 || !n.Set.Files[0].Image || n.Set.Files[0].Access != Create {
		t.Errorf("blockdev-create: files %+v, want /img/new.img, created, an image", n.Set.Files)
	}
}

// TestMacvtapDevice: a tap by ifname names the interface's macvtap device
// too, by its index on the host; without the interface, nothing more.
func TestMacvtapDevice(t *testing.T) {
	fsys := fstest.MapFS{"sys/class/net/tap7/ifindex": &fstest.MapFile{Data: []byte("27\n")}}
	for _, c := range []struct {
		ifname string
		want   []string
	}{
		{"tap7", []string{"read-write /dev/net/tun", "read-write /dev/tap27"}},
		{"gone0", []string{"read-write /dev/net/tun"}},
		{"tap%d", []string{"read-write /dev/net/tun"}},
	} {
		s, err := FromArgs([]string{"-accel", "tcg", "-netdev", "tap,id=n,ifname=" + c.ifname + ",script=no,downscript=no"}, "/vm", fsys)
		if err != nil {
			t.Fatal(err)
		}
		if got := deviceList(s); !slices.Equal(got, c.want) {
			t.Errorf("ifname=%s: devices %q, want %q", c.ifname, got, c.want)
		}
	}
}
