package resources

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// needList renders Needs as sorted lines: "ACCESS ABS" for files,
// "dir ACCESS ABS", "OP FAMILY/TYPE ADDRESS" for sockets, "device ACCESS
// PATH", "fd N", "netuser", "exec CMD".
func needList(n *Needs) []string {
	var out []string
	for _, f := range n.Set.Files {
		p := f.Abs
		if p == "" {
			p = f.Path + " (data dirs)"
		}
		out = append(out, f.Access.String()+" "+p)
	}
	for _, d := range n.Set.Dirs {
		out = append(out, "dir "+d.Access.String()+" "+d.Abs)
	}
	for _, k := range n.Set.Sockets {
		out = append(out, fmt.Sprintf("%s %s/%s %s", k.Op, k.Family, k.Type, k.Address))
	}
	for _, d := range n.Set.Devices {
		out = append(out, "device "+d.Access.String()+" "+d.Path)
	}
	for _, f := range n.Set.FDs {
		out = append(out, fmt.Sprintf("fd %d", f.Num))
	}
	if n.Set.NetUser {
		out = append(out, "netuser")
	}
	for _, e := range n.Exec {
		out = append(out, "exec "+e)
	}
	slices.Sort(out)
	return out
}

// monitorCwd is QEMU's working directory in monitorCases.
const monitorCwd = "/srv/vm"

// monitorCase is one monitor command and what it names.
type monitorCase struct {
	name, cmd, args string
	want            []string
	warn            string // a substring of some warning; "" for none
	err             bool
}

// monitorCases are QMP commands, HMP ones among them (through
// human-monitor-command), with relative names resolved in monitorCwd.
var monitorCases = []monitorCase{
	// Commands that name nothing.
	{name: "query-status", cmd: "query-status", want: nil},
	{name: "qmp_capabilities", cmd: "qmp_capabilities", args: `{}`, want: nil},
	{name: "set_link", cmd: "set_link", args: `{"name":"net0","up":false}`, want: nil},
	{name: "getfd", cmd: "getfd", args: `{"fdname":"fd0"}`, want: nil},
	{name: "add-fd", cmd: "add-fd", args: `{"fdset-id":1}`, want: nil},

	// Block devices.
	{name: "blockdev-add file", cmd: "blockdev-add", args: `{"driver":"file","filename":"/img/a.raw","node-name":"n0"}`,
		want: []string{"read-write /img/a.raw"}},
	{name: "blockdev-add relative, read-only", cmd: "blockdev-add", args: `{"driver":"file","filename":"disk.raw","node-name":"n0","read-only":true}`,
		want: []string{"read-only /srv/vm/disk.raw"}},
	{name: "blockdev-add host_device", cmd: "blockdev-add", args: `{"driver":"host_device","filename":"/dev/sdb","node-name":"n0"}`,
		want: []string{"device read-write /dev/sdb"}},
	{name: "blockdev-add host_cdrom", cmd: "blockdev-add", args: `{"driver":"host_cdrom","filename":"/dev/sr0","node-name":"cd","read-only":true}`,
		want: []string{"device read-only /dev/sr0"}},
	{name: "blockdev-add qcow2 over nested file", cmd: "blockdev-add",
		args: `{"driver":"qcow2","node-name":"q","file":{"driver":"file","filename":"/img/q.qcow2"}}`,
		want: []string{"read-write /img/q.qcow2"}, warn: "host files not read"},
	{name: "blockdev-add raw over nested file, read-only", cmd: "blockdev-add",
		args: `{"driver":"raw","node-name":"r","read-only":true,"file":{"driver":"file","filename":"/img/r.raw"}}`,
		want: []string{"read-only /img/r.raw"}},
	{name: "blockdev-add qcow2 over a node name", cmd: "blockdev-add", args: `{"driver":"qcow2","node-name":"q","file":"n0"}`,
		want: nil, warn: "names a node not defined"},
	{name: "blockdev-add fdset", cmd: "blockdev-add", args: `{"driver":"file","filename":"/dev/fdset/1","node-name":"n0"}`, want: nil},
	{name: "blockdev-add nbd unix", cmd: "blockdev-add", args: `{"driver":"nbd","node-name":"n","server":{"type":"unix","path":"/run/nbd.sock"},"export":"e"}`,
		want: []string{"connect unix/stream /run/nbd.sock"}},
	{name: "blockdev-reopen", cmd: "blockdev-reopen", args: `{"options":[{"driver":"file","filename":"/img/a.raw","node-name":"n0","read-only":true}]}`,
		want: []string{"read-only /img/a.raw"}},
	{name: "blockdev-change-medium", cmd: "blockdev-change-medium", args: `{"id":"cd0","filename":"/isos/a.iso","format":"raw","read-only-mode":"read-only"}`,
		want: []string{"read-only /isos/a.iso"}},
	{name: "blockdev-change-medium retain", cmd: "blockdev-change-medium", args: `{"device":"fd0","filename":"floppy.img","format":"raw"}`,
		want: []string{"read-write /srv/vm/floppy.img"}},
	{name: "blockdev-change-medium bad mode", cmd: "blockdev-change-medium", args: `{"id":"cd0","filename":"/a.iso","read-only-mode":"sideways"}`, err: true},
	{name: "blockdev-change-medium filename not a string", cmd: "blockdev-change-medium", args: `{"id":"cd0","filename":1}`, err: true},
	{name: "change", cmd: "change", args: `{"device":"ide1-cd0","target":"/isos/b.iso","arg":"raw"}`,
		want: []string{"read-write /isos/b.iso"}},
	{name: "change vnc password", cmd: "change", args: `{"device":"vnc","target":"password","arg":"secret"}`, want: nil},
	{name: "blockdev-create file", cmd: "blockdev-create", args: `{"job-id":"j","options":{"driver":"file","filename":"/img/new.raw","size":1048576}}`,
		want: []string{"create /img/new.raw"}},
	{name: "drive-mirror", cmd: "drive-mirror", args: `{"device":"d0","target":"/img/m.qcow2","sync":"full","format":"qcow2"}`,
		want: []string{"create /img/m.qcow2"}},
	{name: "drive-backup existing", cmd: "drive-backup", args: `{"device":"d0","target":"/img/b.raw","sync":"full","mode":"existing"}`,
		want: []string{"read-write /img/b.raw"}},
	{name: "blockdev-snapshot-sync", cmd: "blockdev-snapshot-sync", args: `{"device":"d0","snapshot-file":"/img/s.qcow2","format":"qcow2"}`,
		want: []string{"create /img/s.qcow2"}},

	// Network, character devices, devices and objects.
	{name: "netdev_add user", cmd: "netdev_add", args: `{"type":"user","id":"n1"}`, want: []string{"netuser"}},
	{name: "netdev_add tap fd name", cmd: "netdev_add", args: `{"type":"tap","id":"n1","fd":"tapfd"}`, want: nil},
	{name: "netdev_add stream unix", cmd: "netdev_add",
		args: `{"type":"stream","id":"n1","server":false,"addr":{"type":"unix","path":"/run/net.sock"}}`,
		want: []string{"connect unix/stream /run/net.sock"}},
	{name: "netdev_add socket listen", cmd: "netdev_add", args: `{"type":"socket","id":"n1","listen":"127.0.0.1:5555"}`,
		want: []string{"bind inet/stream 127.0.0.1:5555"}},
	{name: "chardev-add unix server", cmd: "chardev-add",
		args: `{"id":"c0","backend":{"type":"socket","data":{"addr":{"type":"unix","data":{"path":"/run/c0.sock"}},"server":true,"wait":false}}}`,
		want: []string{"bind unix/stream /run/c0.sock"}},
	{name: "chardev-add unix client", cmd: "chardev-add",
		args: `{"id":"c0","backend":{"type":"socket","data":{"addr":{"type":"unix","data":{"path":"rel.sock"}},"server":false}}}`,
		want: []string{"connect unix/stream /srv/vm/rel.sock"}},
	{name: "chardev-add inet", cmd: "chardev-add",
		args: `{"id":"c0","backend":{"type":"socket","data":{"addr":{"type":"inet","data":{"host":"10.0.0.1","port":"4444"}}}}}`,
		want: []string{"connect inet/stream 10.0.0.1:4444"}},
	{name: "chardev-add file", cmd: "chardev-add",
		args: `{"id":"c0","backend":{"type":"file","data":{"out":"/var/log/c0.log","in":"/etc/c0.in","logfile":"/var/log/c0.all"}}}`,
		want: []string{"create /var/log/c0.all", "create /var/log/c0.log", "read-only /etc/c0.in"}},
	{name: "chardev-add pipe", cmd: "chardev-add",
		args: `{"id":"c0","backend":{"type":"pipe","data":{"device":"/run/p"}}}`,
		want: []string{"read-write /run/p", "read-write /run/p.in", "read-write /run/p.out"}},
	{name: "chardev-add serial", cmd: "chardev-add",
		args: `{"id":"c0","backend":{"type":"serial","data":{"device":"/dev/ttyS1"}}}`,
		want: []string{"device read-write /dev/ttyS1"}},
	{name: "chardev-add udp", cmd: "chardev-add",
		args: `{"id":"c0","backend":{"type":"udp","data":{"remote":{"type":"inet","data":{"host":"10.0.0.2","port":"9"}},"local":{"type":"inet","data":{"host":"","port":"7000"}}}}}`,
		want: []string{"bind inet/dgram :7000", "connect inet/dgram 10.0.0.2:9"}},
	{name: "chardev-add null", cmd: "chardev-add", args: `{"id":"c0","backend":{"type":"null","data":{}}}`, want: nil},
	{name: "device_add romfile", cmd: "device_add", args: `{"driver":"e1000","id":"nic1","netdev":"n1","romfile":"/roms/efi-e1000.rom"}`,
		want: []string{"read-only /roms/efi-e1000.rom"}},
	{name: "device_add virtio-blk", cmd: "device_add", args: `{"driver":"virtio-blk-pci","drive":"d1","id":"vd1"}`, want: nil},
	{name: "object-add memory-backend-file", cmd: "object-add",
		args: `{"qom-type":"memory-backend-file","id":"m1","mem-path":"/dev/shm/m1","size":1048576,"share":true}`,
		want: []string{"create /dev/shm/m1"}},

	// Migration.
	{name: "migrate unix", cmd: "migrate", args: `{"uri":"unix:/run/mig.sock"}`, want: []string{"connect unix/stream /run/mig.sock"}},
	{name: "migrate tcp", cmd: "migrate", args: `{"uri":"tcp:10.0.0.9:4444"}`, want: []string{"connect inet/stream 10.0.0.9:4444"}},
	{name: "migrate file", cmd: "migrate", args: `{"uri":"file:/var/lib/save.mig,offset=4096"}`, want: []string{"create /var/lib/save.mig"}},
	{name: "migrate exec", cmd: "migrate", args: `{"uri":"exec:cat > /tmp/x"}`, want: []string{"exec cat > /tmp/x"}},
	{name: "migrate fd", cmd: "migrate", args: `{"uri":"fd:mig"}`, want: nil},
	{name: "migrate unknown", cmd: "migrate", args: `{"uri":"carrier-pigeon:home"}`, err: true},
	{name: "migrate channels", cmd: "migrate",
		args: `{"channels":[{"channel-type":"main","addr":{"transport":"socket","type":"unix","path":"/run/m.sock"}}]}`,
		want: []string{"connect unix/stream /run/m.sock"}},
	{name: "migrate channels exec", cmd: "migrate",
		args: `{"channels":[{"channel-type":"main","addr":{"transport":"exec","args":["/bin/sh","-c","cat"]}}]}`,
		want: []string{"exec /bin/sh -c cat"}},
	{name: "migrate-incoming unix", cmd: "migrate-incoming", args: `{"uri":"unix:/run/in.sock"}`, want: []string{"bind unix/stream /run/in.sock"}},
	{name: "migrate-incoming tcp", cmd: "migrate-incoming", args: `{"uri":"tcp:0.0.0.0:4444"}`, want: []string{"bind inet/stream 0.0.0.0:4444"}},
	{name: "migrate-incoming exec", cmd: "migrate-incoming", args: `{"uri":"exec:cat /tmp/x"}`, want: []string{"exec cat /tmp/x"}},

	// Dumps.
	{name: "screendump", cmd: "screendump", args: `{"filename":"shot.ppm"}`, want: []string{"create /srv/vm/shot.ppm"}},
	{name: "dump-guest-memory file", cmd: "dump-guest-memory", args: `{"paging":false,"protocol":"file:/var/crash/vm.core"}`,
		want: []string{"create /var/crash/vm.core"}},
	{name: "dump-guest-memory fd", cmd: "dump-guest-memory", args: `{"paging":false,"protocol":"fd:dump"}`, want: nil},
	{name: "dump-guest-memory bad protocol", cmd: "dump-guest-memory", args: `{"paging":false,"protocol":"/x"}`, err: true},
	{name: "pmemsave", cmd: "pmemsave", args: `{"val":0,"size":4096,"filename":"/tmp/pmem"}`, want: []string{"create /tmp/pmem"}},
	{name: "nbd-server-start", cmd: "nbd-server-start", args: `{"addr":{"type":"unix","data":{"path":"/run/nbd-export.sock"}}}`,
		want: []string{"bind unix/stream /run/nbd-export.sock"}},

	// HMP through QMP.
	{name: "HMP drive_add", cmd: "human-monitor-command", args: `{"command-line":"drive_add 0 if=none,id=d1,file=/img/hot.raw,format=raw"}`,
		want: []string{"read-write /img/hot.raw"}},
	{name: "HMP drive_add -n", cmd: "human-monitor-command", args: `{"command-line":"drive_add -n dummy if=none,id=d1,file=/img/hot.raw,readonly=on"}`,
		want: []string{"read-only /img/hot.raw"}, warn: "host files not read"},
	{name: "HMP change", cmd: "human-monitor-command", args: `{"command-line":"change ide1-cd0 /isos/c.iso raw read-only"}`,
		want: []string{"read-only /isos/c.iso"}},
	{name: "HMP change -f quoted", cmd: "human-monitor-command", args: `{"command-line":"change -f ide1-cd0 \"/isos/with space.iso\""}`,
		want: []string{"read-write /isos/with space.iso"}, warn: "host files not read"},
	{name: "HMP change vnc", cmd: "human-monitor-command", args: `{"command-line":"change vnc password"}`, want: nil},
	{name: "HMP netdev_add", cmd: "human-monitor-command", args: `{"command-line":"netdev_add socket,id=n2,connect=10.1.1.1:1234"}`,
		want: []string{"connect inet/stream 10.1.1.1:1234"}},
	{name: "HMP chardev-add", cmd: "human-monitor-command", args: `{"command-line":"chardev-add socket,id=c1,path=/run/c1.sock,server=on,wait=off"}`,
		want: []string{"bind unix/stream /run/c1.sock"}},
	{name: "HMP migrate exec", cmd: "human-monitor-command", args: `{"command-line":"migrate -d \"exec:gzip > /tmp/m.gz\""}`,
		want: []string{"exec gzip > /tmp/m.gz"}},
	{name: "HMP screendump -f", cmd: "human-monitor-command", args: `{"command-line":"screendump /tmp/s.png -f png"}`,
		want: []string{"create /tmp/s.png"}},
	{name: "HMP dump-guest-memory", cmd: "human-monitor-command", args: `{"command-line":"dump-guest-memory -p /var/crash/x.core"}`,
		want: []string{"create /var/crash/x.core"}},
	{name: "HMP memsave", cmd: "human-monitor-command", args: `{"command-line":"memsave 0 4096 /tmp/mem"}`,
		want: []string{"create /tmp/mem"}},
	{name: "HMP info", cmd: "human-monitor-command", args: `{"command-line":"info status"}`, want: nil},
	{name: "HMP unknown with a path", cmd: "human-monitor-command", args: `{"command-line":"frobnicate /etc/shadow"}`,
		want: nil, warn: "looks like a path"},
	{name: "HMP unterminated", cmd: "human-monitor-command", args: `{"command-line":"change ide1-cd0 \"/isos/x"}`, err: true},

	// Unknown commands.
	{name: "unknown with a path", cmd: "x-frob", args: `{"where":{"file":"/etc/shadow"}}`, want: nil, warn: "where.file=/etc/shadow"},
	{name: "arguments not an object", cmd: "blockdev-add", args: `[1]`, err: true},
}

func TestFromQMP(t *testing.T) {
	for _, tc := range monitorCases {
		t.Run(tc.name, func(t *testing.T) {
			var args json.RawMessage
			if tc.args != "" {
				args = json.RawMessage(tc.args)
			}
			n, err := FromQMP(tc.cmd, args, monitorCwd, nil)
			checkNeeds(t, tc, n, err)
		})
	}
}

// The HMP cases give the same through FromHMP as through
// human-monitor-command.
func TestFromHMP(t *testing.T) {
	for _, tc := range monitorCases {
		if tc.cmd != "human-monitor-command" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			var a struct {
				Line string `json:"command-line"`
			}
			if err := json.Unmarshal([]byte(tc.args), &a); err != nil {
				t.Fatal(err)
			}
			n, err := FromHMP(a.Line, monitorCwd, nil)
			checkNeeds(t, tc, n, err)
		})
	}
	if _, err := FromHMP("screendump x", "relative", nil); err == nil {
		t.Error("a relative working directory was accepted")
	}
}

// checkNeeds compares what a command gave with its case.
func checkNeeds(t *testing.T, tc monitorCase, n *Needs, err error) {
	t.Helper()
	if tc.err {
		if err == nil {
			t.Fatalf("%s %s = %v, want an error", tc.cmd, tc.args, needList(n))
		}
		return
	}
	if err != nil {
		t.Fatalf("%s %s: %v", tc.cmd, tc.args, err)
	}
	want := slices.Clone(tc.want)
	slices.Sort(want)
	if got := needList(n); !slices.Equal(got, want) {
		t.Errorf("%s %s\n got %q\nwant %q", tc.cmd, tc.args, got, want)
	}
	if n.Empty() != (len(tc.want) == 0) {
		t.Errorf("Empty() = %v with %q", n.Empty(), needList(n))
	}
	found := tc.warn == ""
	for _, w := range n.Set.Warnings {
		if tc.warn != "" && strings.Contains(w, tc.warn) {
			found = true
		}
	}
	if !found || (tc.warn == "" && len(n.Set.Warnings) > 0) {
		t.Errorf("warnings %q, want one containing %q", n.Set.Warnings, tc.warn)
	}
	for _, f := range n.Set.Files {
		if !strings.HasPrefix(f.Option, "QMP "+tc.cmd) && !strings.HasPrefix(f.Option, "HMP ") {
			t.Errorf("file %s comes from %q, want the command named", f.Path, f.Option)
		}
	}
}

// qcow2With returns a version 2 qcow2 header naming backing as its
// backing file.
func qcow2With(backing string) []byte {
	b := make([]byte, 80+len(backing))
	copy(b, "QFI\xfb")
	be := binary.BigEndian
	be.PutUint32(b[4:], 2)
	be.PutUint64(b[8:], 80)
	be.PutUint32(b[16:], uint32(len(backing)))
	be.PutUint32(b[20:], 16) // cluster_bits
	copy(b[80:], backing)
	return b
}

// A qcow2 image added at run time brings its backing chain, read-only.
func TestFromQMPBackingChain(t *testing.T) {
	fsys := fstest.MapFS{
		"img/top.qcow2":  {Data: qcow2With("base.qcow2")},
		"img/base.qcow2": {Data: qcow2With("")},
	}
	n, err := FromQMP("blockdev-add", json.RawMessage(`{"driver":"qcow2","node-name":"q","file":{"driver":"file","filename":"/img/top.qcow2"}}`), "/", fsys)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"read-only /img/base.qcow2", "read-write /img/top.qcow2"}
	if got := needList(n); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q (warnings %q)", got, want, n.Set.Warnings)
	}
	n, err = FromQMP("blockdev-change-medium", json.RawMessage(`{"id":"cd0","filename":"/img/top.qcow2","read-only-mode":"read-only"}`), "/", fsys)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{"read-only /img/base.qcow2", "read-only /img/top.qcow2"}
	if got := needList(n); !slices.Equal(got, want) {
		t.Errorf("change-medium: got %q, want %q (warnings %q)", got, want, n.Set.Warnings)
	}
}

func TestFromQMPRelativeCwd(t *testing.T) {
	if _, err := FromQMP("screendump", json.RawMessage(`{"filename":"x"}`), "relative", nil); err == nil {
		t.Error("a relative working directory was accepted")
	}
}
