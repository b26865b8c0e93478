package resources

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// qcow2Spec describes a hand-written qcow2 header.
type qcow2Spec struct {
	version       uint32
	backing       string
	backingFormat string
	dataFile      string
	clusterBits   uint32
}

// qcow2Bytes writes a qcow2 header as QEMU lays it out: the header, its
// extensions, then the backing file name, all in the first cluster.
func qcow2Bytes(s qcow2Spec) []byte {
	if s.version == 0 {
		s.version = 3
	}
	if s.clusterBits == 0 {
		s.clusterBits = 16
	}
	be := binary.BigEndian
	hlen := qcow2HeaderV2
	if s.version == 3 {
		hlen = qcow2HeaderV3
	}
	b := make([]byte, hlen)
	copy(b, qcow2Magic)
	be.PutUint32(b[4:], s.version)
	be.PutUint32(b[20:], s.clusterBits)
	be.PutUint64(b[24:], 1<<20) // virtual size
	if s.version == 3 {
		if s.dataFile != "" {
			be.PutUint64(b[72:], incompatDataBit)
		}
		be.PutUint32(b[96:], 4) // refcount_order
		be.PutUint32(b[100:], uint32(hlen))
	}
	ext := func(typ uint32, data string) {
		var h [8]byte
		be.PutUint32(h[:], typ)
		be.PutUint32(h[4:], uint32(len(data)))
		b = append(b, h[:]...)
		b = append(b, data...)
		for len(b)%8 != 0 {
			b = append(b, 0)
		}
	}
	if s.backingFormat != "" {
		ext(extBackingFormat, s.backingFormat)
	}
	if s.dataFile != "" {
		ext(extDataFile, s.dataFile)
	}
	b = append(b, make([]byte, 8)...) // end of extensions
	if s.backing != "" {
		be.PutUint64(b[8:], uint64(len(b)))
		be.PutUint32(b[16:], uint32(len(s.backing)))
		b = append(b, s.backing...)
	}
	return b
}

func TestParseQCOW2Header(t *testing.T) {
	patch := func(b []byte, off int, v uint64, size int) []byte {
		c := append([]byte(nil), b...)
		if size == 4 {
			binary.BigEndian.PutUint32(c[off:], uint32(v))
		} else {
			binary.BigEndian.PutUint64(c[off:], v)
		}
		return c
	}
	withBacking := qcow2Bytes(qcow2Spec{backing: "base.img", backingFormat: "raw"})
	tests := []struct {
		name    string
		in      []byte
		want    QCOW2Header
		wantErr string
	}{
		{name: "v3 no backing", in: qcow2Bytes(qcow2Spec{}), want: QCOW2Header{Version: 3}},
		{name: "v2 backing", in: qcow2Bytes(qcow2Spec{version: 2, backing: "../base.qcow2"}), want: QCOW2Header{Version: 2, Backing: "../base.qcow2"}},
		{name: "v3 backing and format", in: withBacking, want: QCOW2Header{Version: 3, Backing: "base.img", BackingFormat: "raw"}},
		{name: "v3 data file", in: qcow2Bytes(qcow2Spec{dataFile: "data.raw"}), want: QCOW2Header{Version: 3, DataFile: "data.raw"}},
		{name: "absolute backing", in: qcow2Bytes(qcow2Spec{backing: "/srv/base.qcow2", backingFormat: "qcow2"}), want: QCOW2Header{Version: 3, Backing: "/srv/base.qcow2", BackingFormat: "qcow2"}},
		{name: "raw image", in: []byte("this is not an image at all, just bytes that go on for a while......................."), wantErr: "not a qcow2 image"},
		{name: "empty", in: nil, wantErr: "short read"},
		{name: "truncated", in: withBacking[:50], wantErr: "short read"},
		{name: "bad version", in: patch(withBacking, 4, 4, 4), wantErr: "unsupported version 4"},
		{name: "cluster bits too small", in: patch(withBacking, 20, 8, 4), wantErr: "cluster_bits 8"},
		{name: "cluster bits too large", in: patch(withBacking, 20, 22, 4), wantErr: "cluster_bits 22"},
		{name: "backing name too long", in: patch(withBacking, 16, 1024, 4), wantErr: "backing file name of 1024 bytes"},
		{name: "backing name outside cluster", in: patch(withBacking, 8, 1<<16, 8), wantErr: "outside the first cluster"},
		{name: "backing name past the end", in: withBacking[:len(withBacking)-2], wantErr: "backing file name"},
		{name: "header length not aligned", in: patch(withBacking, 100, 105, 4), wantErr: "header_length 105"},
		{name: "extension too long", in: patch(withBacking, qcow2HeaderV3+4, 1<<20, 4), wantErr: "beyond the header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseQCOW2Header(bytes.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseQCOW2Header: %v", err)
			}
			if *h != tt.want {
				t.Errorf("header = %+v, want %+v", *h, tt.want)
			}
		})
	}
}

func FuzzParseQCOW2Header(f *testing.F) {
	f.Add(qcow2Bytes(qcow2Spec{}))
	f.Add(qcow2Bytes(qcow2Spec{version: 2, backing: "b"}))
	f.Add(qcow2Bytes(qcow2Spec{backing: "base.img", backingFormat: "raw", dataFile: "d"}))
	f.Add([]byte("QFI\xfb"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseQCOW2Header(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(h.Backing) > maxBackingName || strings.IndexByte(h.Backing, 0) >= 0 {
			t.Fatalf("accepted backing name %q", h.Backing)
		}
		if h.Version != 2 && h.Version != 3 {
			t.Fatalf("accepted version %d", h.Version)
		}
	})
}

// chainFS builds a MapFS from absolute paths.
func chainFS(files map[string][]byte) fstest.MapFS {
	m := fstest.MapFS{}
	for p, b := range files {
		m[fsName(p)] = &fstest.MapFile{Data: b}
	}
	return m
}

func TestBackingChains(t *testing.T) {
	loopLong := map[string][]byte{}
	for i := 0; i < maxChain+5; i++ {
		loopLong[filepath.Join("/img", "l"+itoa(i))] = qcow2Bytes(qcow2Spec{backing: "l" + itoa(i+1)})
	}
	tests := []struct {
		name  string
		args  []string
		files map[string][]byte
		want  []string // "access abs"
		warn  []string
	}{
		{
			name: "relative chain with formats",
			args: []string{"-drive", "file=/vm/top.qcow2,format=qcow2,id=d0"},
			files: map[string][]byte{
				"/vm/top.qcow2":      qcow2Bytes(qcow2Spec{backing: "../base/mid.qcow2", backingFormat: "qcow2"}),
				"/base/mid.qcow2":    qcow2Bytes(qcow2Spec{version: 2, backing: "os.raw"}),
				"/base/os.raw":       []byte("raw bytes, no magic, long enough to read a header from......................."),
				"/elsewhere/os.raw":  []byte("not this one"),
				"/vm/unrelated.file": []byte("x"),
			},
			want: []string{"read-write /vm/top.qcow2", "read-only /base/mid.qcow2", "read-only /base/os.raw"},
		},
		{
			name: "backing format raw stops probing",
			args: []string{"-hda", "/vm/a.qcow2"},
			files: map[string][]byte{
				"/vm/a.qcow2": qcow2Bytes(qcow2Spec{backing: "b.qcow2", backingFormat: "raw"}),
				"/vm/b.qcow2": qcow2Bytes(qcow2Spec{backing: "c.qcow2"}), // raw says: do not follow
			},
			want: []string{"read-write /vm/a.qcow2", "read-only /vm/b.qcow2"},
		},
		{
			name:  "format raw is not read",
			args:  []string{"-drive", "file=/vm/a.qcow2,format=raw"},
			files: map[string][]byte{"/vm/a.qcow2": qcow2Bytes(qcow2Spec{backing: "b"})},
			want:  []string{"read-write /vm/a.qcow2"},
		},
		{
			name: "loop",
			args: []string{"-drive", "file=/vm/a,readonly=on"},
			files: map[string][]byte{
				"/vm/a": qcow2Bytes(qcow2Spec{backing: "b"}),
				"/vm/b": qcow2Bytes(qcow2Spec{backing: "/vm/a"}),
			},
			want: []string{"read-only /vm/a", "read-only /vm/b"},
			warn: []string{"loops back to /vm/a"},
		},
		{
			name:  "self loop",
			args:  []string{"-drive", "file=/vm/a"},
			files: map[string][]byte{"/vm/a": qcow2Bytes(qcow2Spec{backing: "./a"})},
			want:  []string{"read-write /vm/a"},
			warn:  []string{"loops back to /vm/a"},
		},
		{
			name:  "too long",
			args:  []string{"-drive", "file=/img/l0"},
			files: loopLong,
			warn:  []string{"longer than 64"},
		},
		{
			name:  "missing backing file",
			args:  []string{"-drive", "file=/vm/a"},
			files: map[string][]byte{"/vm/a": qcow2Bytes(qcow2Spec{backing: "gone"})},
			want:  []string{"read-write /vm/a", "read-only /vm/gone"},
			warn:  []string{"backing file /vm/gone does not exist"},
		},
		{
			name:  "external data file gets the image's access",
			args:  []string{"-drive", "file=/vm/a"},
			files: map[string][]byte{"/vm/a": qcow2Bytes(qcow2Spec{dataFile: "a.data"})},
			want:  []string{"read-write /vm/a", "read-write /vm/a.data"},
		},
		{
			name:  "json backing",
			args:  []string{"-drive", "file=/vm/a"},
			files: map[string][]byte{"/vm/a": qcow2Bytes(qcow2Spec{backing: `json:{"driver":"qcow2","file":{"driver":"file","filename":"/srv/b"}}`}), "/srv/b": qcow2Bytes(qcow2Spec{})},
			want:  []string{"read-write /vm/a", "read-only /srv/b"},
		},
		{
			name:  "network backing warns",
			args:  []string{"-drive", "file=/vm/a"},
			files: map[string][]byte{"/vm/a": qcow2Bytes(qcow2Spec{backing: "https://example.org/base.qcow2"})},
			want:  []string{"read-write /vm/a"},
			warn:  []string{"network block protocol https"},
		},
		{
			name:  "blockdev node reference",
			args:  []string{"-blockdev", "driver=file,node-name=f0,filename=/vm/a", "-blockdev", "driver=qcow2,node-name=q0,file=f0"},
			files: map[string][]byte{"/vm/a": qcow2Bytes(qcow2Spec{backing: "b"}), "/vm/b": []byte("raw.............................................................................")},
			want:  []string{"read-write /vm/a", "read-only /vm/b"},
		},
		{
			name:  "blockdev explicit backing null",
			args:  []string{"-blockdev", `{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"/vm/a"}}`},
			files: map[string][]byte{"/vm/a": qcow2Bytes(qcow2Spec{backing: "b"})},
			want:  []string{"read-write /vm/a"},
		},
		{
			name:  "corrupt header warns",
			args:  []string{"-drive", "file=/vm/a"},
			files: map[string][]byte{"/vm/a": []byte("QFI\xfb\x00\x00\x00\x09and the rest is garbage that goes on long enough to be read.........")},
			want:  []string{"read-write /vm/a"},
			warn:  []string{"unsupported version 9"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := FromArgs(append([]string{"-nic", "none"}, tt.args...), "/", chainFS(tt.files))
			if err != nil {
				t.Fatalf("FromArgs: %v", err)
			}
			if tt.want != nil {
				if got := fileList(s); !equal(got, tt.want) {
					t.Errorf("files:\n got %q\nwant %q", got, tt.want)
				}
			}
			checkWarnings(t, s, tt.warn)
		})
	}
}

// TestQemuImgChain reads a chain qemu-img itself wrote.
func TestQemuImgChain(t *testing.T) {
	img, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not in PATH; install qemu-utils to test chains it writes")
	}
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(img, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "base"), 0o755); err != nil {
		t.Fatal(err)
	}
	run("create", "-f", "raw", "base/os.raw", "1M")
	run("create", "-f", "qcow2", "-b", "os.raw", "-F", "raw", "base/mid.qcow2")
	run("create", "-f", "qcow2", "-b", "base/mid.qcow2", "-F", "qcow2", "top.qcow2")
	run("create", "-f", "qcow2", "-o", "data_file=top.data", "ext.qcow2", "1M")

	s, err := FromArgs([]string{"-nic", "none", "-drive", "file=top.qcow2,if=virtio,id=d0", "-drive", "file=ext.qcow2,format=qcow2,id=d1"}, dir, HostFS())
	if err != nil {
		t.Fatalf("FromArgs: %v", err)
	}
	want := []string{
		"read-write " + filepath.Join(dir, "top.qcow2"),
		"read-only " + filepath.Join(dir, "base/mid.qcow2"),
		"read-only " + filepath.Join(dir, "base/os.raw"),
		"read-write " + filepath.Join(dir, "ext.qcow2"),
		"read-write " + filepath.Join(dir, "top.data"),
	}
	if got := fileList(s); !equal(got, want) {
		t.Errorf("files:\n got %q\nwant %q", got, want)
	}
	checkWarnings(t, s, nil)
}

func TestReadQCOW2NotQCOW2(t *testing.T) {
	fsys := chainFS(map[string][]byte{"/x": []byte("QFI")})
	if _, err := readQCOW2(fsys, "/x"); errors.Is(err, errNotQCOW2) || err == nil {
		t.Errorf("3-byte file: err = %v, want a short read", err)
	}
}
