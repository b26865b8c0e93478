package resources

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"unicode/utf8"
)

// fuzzFS is a small host for the fuzzer: a qcow2 chain, a loop and a
// config file, so that arguments can reach the readers.
func fuzzFS() fstest.MapFS {
	return chainFS(map[string][]byte{
		"/vm/top.qcow2":  qcow2Bytes(qcow2Spec{backing: "base.qcow2"}),
		"/vm/base.qcow2": qcow2Bytes(qcow2Spec{backing: "top.qcow2", dataFile: "d"}),
		"/vm/raw.img":    rawBytes,
		"/vm/vm.cfg":     []byte("[drive \"d\"]\n  file = \"top.qcow2\"\n[chardev \"c\"]\n  backend = \"socket\"\n  path = \"s\"\n"),
	})
}

// FuzzFromArgs splits its input into arguments at NUL bytes. FromArgs
// must never panic, and every set it returns must hold its invariants.
func FuzzFromArgs(f *testing.F) {
	for _, seed := range [][]string{
		{"-drive", "file=top.qcow2,if=virtio,id=d0", "-snapshot"},
		{"-blockdev", `{"driver":"qcow2","file":{"driver":"file","filename":"top.qcow2"}}`},
		{"-netdev", "user,id=n,hostfwd=tcp::1-:2,guestfwd=tcp:1.2.3.4:5-unix:/s", "-nic", "tap,fd=3"},
		{"-chardev", "socket,id=c,host=::1,port=4,server=on", "-serial", "udp:1.2.3.4:5@:6", "-qmp", "unix:q,server,nowait"},
		{"-readconfig", "vm.cfg", "-readconfig", "vm.cfg"},
		{"-incoming", "tcp:[::]:4444,to=4450", "-vnc", ":1,websocket=on,to=3"},
		{"-object", "memory-backend-file,id=m,mem-path=/dev/hugepages", "-device", "vfio-pci,host=01:00.0"},
		{"raw.img", "--cdrom", "x,,y", "-drive", "file=fat:rw:dir,,x"},
	} {
		f.Add(strings.Join(seed, "\x00"))
	}
	fsys := fuzzFS()
	f.Fuzz(func(t *testing.T, in string) {
		args := strings.Split(in, "\x00")
		s, err := FromArgs(args, "/vm", fsys)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		checkInvariants(t, s, utf8.ValidString(in))
	})
}

// checkInvariants holds for every derived set: paths are absolute and
// clean, accesses and socket fields are known values, fds are
// non-negative, the renderers work and JSON round-trips.
//
// JSON strings carry no invalid UTF-8 (such names come back as U+FFFD), so
// the round trip is exact only when the input was valid UTF-8 (utf8).
func checkInvariants(t *testing.T, s *Set, utf8 bool) {
	t.Helper()
	if len(s.Accels) == 0 {
		t.Fatal("no accelerators")
	}
	checkResources(t, s, utf8)
}

// checkResources holds for every set, a whole VM's or one monitor
// command's: checkInvariants but for what only a whole VM has.
func checkResources(t *testing.T, s *Set, utf8 bool) {
	t.Helper()
	for _, f := range s.Files {
		if f.Access < ReadOnly || f.Access > Create {
			t.Fatalf("file %+v: bad access", f)
		}
		if f.Abs == "" && !f.DataDir {
			t.Fatalf("file %+v: no absolute path", f)
		}
		if f.Abs != "" && (!filepath.IsAbs(f.Abs) || filepath.Clean(f.Abs) != f.Abs) {
			t.Fatalf("file %+v: path not absolute and clean", f)
		}
		if f.Option == "" {
			t.Fatalf("file %+v: no option", f)
		}
	}
	for _, d := range s.Dirs {
		if !filepath.IsAbs(d.Abs) || filepath.Clean(d.Abs) != d.Abs || d.Access < ReadOnly || d.Access > Create {
			t.Fatalf("dir %+v", d)
		}
	}
	for _, k := range s.Sockets {
		switch k.Family {
		case FamilyUnix:
			if !strings.HasPrefix(k.Address, "/") && !strings.HasPrefix(k.Address, "@") {
				t.Fatalf("socket %+v: unix address neither a path nor abstract", k)
			}
		case FamilyInet, FamilyInet6, FamilyVsock:
		default:
			t.Fatalf("socket %+v: bad family", k)
		}
		if (k.Op != OpConnect && k.Op != OpBind) || (k.Type != Stream && k.Type != Dgram) {
			t.Fatalf("socket %+v: bad op or type", k)
		}
	}
	for _, d := range s.Devices {
		if !filepath.IsAbs(d.Path) || d.Access < ReadOnly || d.Access > Create {
			t.Fatalf("device %+v", d)
		}
	}
	for _, f := range s.FDs {
		if f.Num < 0 {
			t.Fatalf("fd %+v", f)
		}
	}
	if s.String() == "" { // its content is checked in TestRender
		t.Fatal("empty rendering")
	}
	b, err := s.JSON()
	if err != nil {
		t.Fatalf("JSON: %v", err)
	}
	var back Set
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("JSON round trip: %v", err)
	}
	b2, err := back.JSON()
	if err != nil {
		t.Fatalf("JSON again: %v", err)
	}
	if !utf8 {
		return
	}
	if !bytes.Equal(b, b2) {
		t.Fatalf("JSON round trip differs:\n%s\n%s", b, b2)
	}
}

// TestInvariantsOverSeeds checks the invariants on a few command lines
// in plain `go test` runs (the fuzz corpus in testdata runs too).
func TestInvariantsOverSeeds(t *testing.T) {
	fsys := fuzzFS()
	for _, args := range [][]string{
		{"-drive", "file=top.qcow2,if=virtio,id=d0", "-snapshot"},
		{"-readconfig", "vm.cfg"},
		{"-netdev", "user,id=n,hostfwd=tcp::1-:2", "-chardev", "pty,id=p", "-device", "vfio-pci,host=01:00.0"},
	} {
		s, err := FromArgs(args, "/vm", fsys)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		checkInvariants(t, s, true)
	}
}

func TestRender(t *testing.T) {
	s, err := FromArgs([]string{"-name", "web", "-enable-kvm", "-nic", "none",
		"-drive", "file=raw.img,format=raw,id=d0", "-qmp", "unix:/run/q,server=on,wait=off",
		"-netdev", "tap,id=t,fd=3", "-L", "/usr/share/qemu", "-bios", "bios-256k.bin", "-incoming", "exec:cat x"}, "/vm", fuzzFS())
	if err != nil {
		t.Fatal(err)
	}
	out := s.String()
	for _, want := range []string{
		"VM: web",
		"Accelerators: kvm",
		"User-mode networking: no",
		"read-write /vm/raw.img -drive file= (id=d0)",
		"read-only  bios-256k.bin (QEMU data dirs) -bios",
		"bind unix/stream /run/q -qmp socket path=",
		"read-write /dev/kvm accelerator kvm",
		"3  -netdev tap (id=t) fd=",
		"read-only /usr/share/qemu -L",
		"Warnings:\n  -incoming exec:cat x: QEMU runs a shell command",
	} {
		if !strings.Contains(squeeze(out), squeeze(want)) {
			t.Errorf("rendering lacks %q:\n%s", want, out)
		}
	}
	b, err := s.JSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"access": "read-write"`, `"netuser": false`, `"fds": [`, `"fd": 3`, `"name": "web"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s:\n%s", want, b)
		}
	}
	if a, ok := s.FileAccess("/vm/raw.img"); !ok || a != ReadWrite {
		t.Errorf("FileAccess(/vm/raw.img) = %v, %v", a, ok)
	}
	if _, ok := s.FileAccess("/etc/shadow"); ok {
		t.Error("FileAccess(/etc/shadow) found")
	}
	var a Access
	if err := a.UnmarshalText([]byte("sideways")); err == nil {
		t.Error("unknown access accepted")
	}
	if _, err := Access(9).MarshalText(); err == nil {
		t.Error("Access(9) marshalled")
	}
}

// squeeze collapses runs of spaces, so table padding does not matter.
func squeeze(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " \n ")), " ")
}

// FuzzFromQMP splits its input into a command name and its arguments at
// the first NUL byte. FromQMP must never panic, and every set it returns
// must hold the invariants of a command's resources. TestFromQMP is its
// table test.
func FuzzFromQMP(f *testing.F) {
	for _, tc := range monitorCases {
		f.Add(tc.cmd + "\x00" + tc.args)
	}
	fsys := fuzzFS()
	f.Fuzz(func(t *testing.T, in string) {
		cmd, args, _ := strings.Cut(in, "\x00")
		var raw json.RawMessage
		if args != "" {
			raw = json.RawMessage(args)
		}
		n, err := FromQMP(cmd, raw, "/vm", fsys)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if n.Set == nil {
			t.Fatal("no set")
		}
		if len(n.Set.Accels) != 0 || n.Set.Name != "" {
			t.Fatalf("a command's set names accelerators %q or a VM %q", n.Set.Accels, n.Set.Name)
		}
		checkResources(t, n.Set, utf8.ValidString(in))
	})
}
