package resources

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// What glibc reads and asks to look up the user of -runas or -run-with
// user=.
var (
	userLookupFiles   = []string{"read-only /etc/nsswitch.conf", "read-only /etc/passwd", "read-only /etc/group", "read-only /proc/sys/kernel/ngroups_max"}
	userLookupSockets = []string{"connect unix/stream /run/nscd/socket", "connect unix/stream /var/run/nscd/socket"}
)

// deriveCase is one command line and the set expected from it. Cases get
// "-accel tcg -nic none" in front unless bare is set, so that only what
// the case is about shows; nil lists expect nothing.
type deriveCase struct {
	name    string
	args    []string
	bare    bool
	cwd     string
	fs      fstest.MapFS
	files   []string
	dirs    []string
	sockets []string
	devices []string
	fds     []int
	netuser bool
	warn    []string
	check   func(t *testing.T, s *Set)
}

func runCases(t *testing.T, cases []deriveCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if !tt.bare {
				args = append([]string{"-accel", "tcg", "-nic", "none"}, args...)
			}
			cwd := tt.cwd
			if cwd == "" {
				cwd = "/vm"
			}
			fsys := tt.fs
			if fsys == nil {
				fsys = fstest.MapFS{}
			}
			s, err := FromArgs(args, cwd, fsys)
			if err != nil {
				t.Fatalf("FromArgs: %v", err)
			}
			if got := fileList(s); !equal(got, tt.files) {
				t.Errorf("files:\n got %q\nwant %q", got, tt.files)
			}
			if got := dirList(s); !equal(got, tt.dirs) {
				t.Errorf("dirs:\n got %q\nwant %q", got, tt.dirs)
			}
			if got := socketList(s); !equal(got, tt.sockets) {
				t.Errorf("sockets:\n got %q\nwant %q", got, tt.sockets)
			}
			if got := deviceList(s); !equal(got, tt.devices) {
				t.Errorf("devices:\n got %q\nwant %q", got, tt.devices)
			}
			if got := fdList(s); !(len(got) == 0 && len(tt.fds) == 0) && !slices.Equal(got, tt.fds) {
				t.Errorf("fds: got %v, want %v", got, tt.fds)
			}
			if s.NetUser != tt.netuser {
				t.Errorf("NetUser = %v, want %v", s.NetUser, tt.netuser)
			}
			checkWarnings(t, s, tt.warn)
			if tt.check != nil {
				tt.check(t, s)
			}
		})
	}
}

var rawBytes = []byte(strings.Repeat("raw disk ", 20))

func TestDrives(t *testing.T) {
	runCases(t, []deriveCase{
		{name: "file relative to cwd", args: []string{"-drive", "file=disk.img,if=virtio,format=raw,id=disk0"}, files: []string{"read-write /vm/disk.img"},
			check: func(t *testing.T, s *Set) {
				if s.Files[0].Option != "-drive file= (id=disk0)" || s.Files[0].Path != "disk.img" {
					t.Errorf("file = %+v", s.Files[0])
				}
			}},
		{name: "readonly", args: []string{"-drive", "file=/d.img,format=raw,readonly=on"}, files: []string{"read-only /d.img"}},
		{name: "cdrom media", args: []string{"-drive", "file=/d.iso,media=cdrom,format=raw"}, files: []string{"read-only /d.iso"}},
		{name: "snapshot=on", args: []string{"-drive", "file=/d.img,format=raw,snapshot=on"}, files: []string{"create /var/tmp/vl.??????", "read-only /d.img"}},
		{name: "global -snapshot after the drive", args: []string{"-drive", "file=/d.img,format=raw", "-snapshot"}, files: []string{"create /var/tmp/vl.??????", "read-only /d.img"}},
		{name: "snapshot spares read-only drives", args: []string{"-snapshot", "-cdrom", "/c.iso"}, fs: chainFS(map[string][]byte{"/c.iso": rawBytes}), files: []string{"read-only /c.iso"}},
		{name: "comma in file name", args: []string{"-drive", "file=/a,,b.img,format=raw"}, files: []string{"read-write /a,b.img"}},
		{name: "file: protocol", args: []string{"-drive", "file=file:/x:y.img,format=raw"}, files: []string{"read-write /x:y.img"}},
		{name: "colon after slash is a path", args: []string{"-drive", "file=./x:y.img,format=raw"}, files: []string{"read-write /vm/x:y.img"}},
		{name: "nested file options", args: []string{"-drive", "file.driver=file,file.filename=/n.img,format=raw,if=none,id=n"}, files: []string{"read-write /n.img"}},
		{name: "json: file name", args: []string{"-drive", `file=json:{"driver":"raw",,"file":{"driver":"file",,"filename":"/j.img"}}`}, files: []string{"read-write /j.img"}},
		{name: "vvfat rw", args: []string{"-drive", "file=fat:rw:/share,format=raw"}, dirs: []string{"read-write /share"}, files: []string{"create /var/tmp/vl.??????"}},
		{name: "vvfat read-only", args: []string{"-drive", "file=fat:floppy:16:rel"}, dirs: []string{"read-only /vm/rel"}},
		{name: "nbd unix", args: []string{"-drive", "file=nbd:unix:/run/nbd.sock:exportname=x"}, sockets: []string{"connect unix/stream /run/nbd.sock"}},
		{name: "nbd uri", args: []string{"-drive", "file=nbd://10.0.0.1:10809/exp"}, sockets: []string{"connect inet/stream 10.0.0.1:10809"}},
		{name: "nbd+unix uri", args: []string{"-drive", "file=nbd+unix:///exp?socket=/run/n.sock"}, sockets: []string{"connect unix/stream /run/n.sock"}},
		{name: "network protocol warns", args: []string{"-drive", "file=iscsi://h/iqn/0"}, warn: []string{"network block protocol iscsi"}},
		{name: "fdset", args: []string{"-add-fd", "fd=5,set=1", "-drive", "file=/dev/fdset/1,format=raw"}, fds: []int{5}},
		{name: "io_uring", args: []string{"-drive", "file=/d.img,format=raw,aio=io_uring,cache=none"}, files: []string{"read-write /d.img"},
			check: func(t *testing.T, s *Set) {
				if !s.IOUring {
					t.Error("IOUring not set")
				}
			}},
		{name: "shorthands", args: []string{"-hda", "a.img", "-hdb", "/b.img", "-cdrom", "/c,d.iso", "-fda", "/f.img", "-pflash", "/OVMF_VARS.fd", "-mtdblock", "/m", "-sd", "/s"},
			fs:    chainFS(map[string][]byte{"/vm/a.img": rawBytes, "/b.img": rawBytes, "/c,d.iso": rawBytes, "/f.img": rawBytes, "/OVMF_VARS.fd": rawBytes, "/m": rawBytes, "/s": rawBytes}),
			files: []string{"read-write /vm/a.img", "read-write /b.img", "read-only /c,d.iso", "read-write /f.img", "read-write /OVMF_VARS.fd", "read-write /m", "read-write /s"}},
		{name: "bare argument is -hda", args: []string{"disk.img"}, fs: chainFS(map[string][]byte{"/vm/disk.img": rawBytes}), files: []string{"read-write /vm/disk.img"}},
		{name: "missing image warns", args: []string{"-drive", "file=/gone.qcow2"}, files: []string{"read-write /gone.qcow2"}, warn: []string{"/gone.qcow2 does not exist"}},
		{name: "path-like unknown key warns", args: []string{"-drive", "file=/d.img,format=raw,x-strange=/etc/shadow"}, files: []string{"read-write /d.img"}, warn: []string{"x-strange=/etc/shadow: looks like a path"}},
		{name: "vmdk warns", args: []string{"-drive", "file=/d.vmdk,format=vmdk"}, files: []string{"read-write /d.vmdk"}, warn: []string{"vmdk descriptors"}},
		{name: "empty cdrom drive", args: []string{"-drive", "if=none,id=cd,media=cdrom"}},
	})
}

func TestBlockdev(t *testing.T) {
	runCases(t, []deriveCase{
		{name: "file node", args: []string{"-blockdev", "driver=file,node-name=f,filename=/a.img"}, files: []string{"read-write /a.img"}},
		{name: "file node read-only", args: []string{"-blockdev", "driver=file,node-name=f,filename=/a.img,read-only=on"}, files: []string{"read-only /a.img"}},
		{name: "nested dotted", args: []string{"-blockdev", "driver=raw,node-name=r,file.driver=file,file.filename=/b.img"}, files: []string{"read-write /b.img"},
			check: func(t *testing.T, s *Set) {
				if got := s.Files[0].Option; got != "-blockdev (node-name=r) file.filename=" {
					t.Errorf("option = %q", got)
				}
			}},
		{name: "implied driver", args: []string{"-blockdev", "file,node-name=f,filename=/c.img"}, files: []string{"read-write /c.img"}},
		{name: "json", args: []string{"-blockdev", `{"driver":"qcow2","node-name":"q","read-only":true,"file":{"driver":"file","filename":"/d.qcow2"},"backing":{"driver":"raw","file":{"driver":"file","filename":"/base.raw"}}}`},
			files: []string{"read-only /d.qcow2", "read-only /base.raw"}},
		{name: "host_device", args: []string{"-blockdev", "driver=host_device,node-name=h,filename=/dev/sdb"}, devices: []string{"read-write /dev/sdb"}},
		{name: "nbd node", args: []string{"-blockdev", "driver=nbd,node-name=n,server.type=unix,server.path=/run/nbd,export=x"}, sockets: []string{"connect unix/stream /run/nbd"}},
		{name: "nbd inet default port", args: []string{"-blockdev", `{"driver":"nbd","node-name":"n","server":{"type":"inet","host":"::1"}}`}, sockets: []string{"connect inet6/stream [::1]:10809"}},
		{name: "quorum children", args: []string{"-blockdev", "driver=quorum,node-name=q,vote-threshold=1,children.0.driver=file,children.0.filename=/q0,children.1.driver=file,children.1.filename=/q1"},
			files: []string{"read-write /q0", "read-write /q1"}},
		{name: "undefined reference warns", args: []string{"-blockdev", "driver=qcow2,node-name=q,file=nowhere"}, warn: []string{"file=nowhere names a node not defined"}},
		{name: "network driver warns", args: []string{"-blockdev", "driver=ssh,node-name=s,server.host=h,path=/img"}, warn: []string{"network block driver ssh"}},
		{name: "vvfat", args: []string{"-blockdev", "driver=vvfat,node-name=v,dir=/share,rw=on"}, dirs: []string{"read-write /share"}},
	})
}

func TestChardevs(t *testing.T) {
	runCases(t, []deriveCase{
		{name: "unix server", args: []string{"-chardev", "socket,id=mon0,path=/run/qmp.sock,server=on,wait=off"}, sockets: []string{"bind unix/stream /run/qmp.sock"},
			check: func(t *testing.T, s *Set) {
				if got := s.Sockets[0].Option; got != "-chardev socket (id=mon0) path=" {
					t.Errorf("option = %q", got)
				}
			}},
		{name: "unix client relative", args: []string{"-chardev", "socket,id=c,path=vhost.sock"}, sockets: []string{"connect unix/stream /vm/vhost.sock"}},
		{name: "abstract", args: []string{"-chardev", "socket,id=c,path=qemu-a,abstract=on,server=on"}, sockets: []string{"bind unix/stream @qemu-a"}},
		{name: "bare server flag, nowait", args: []string{"-chardev", "socket,id=c,path=/s,server,nowait"}, sockets: []string{"bind unix/stream /s"}},
		{name: "tcp server range", args: []string{"-chardev", "socket,id=c,host=127.0.0.1,port=4444,to=4450,server=on"}, sockets: []string{"bind inet/stream 127.0.0.1:4444-4450"}},
		{name: "tcp client v6", args: []string{"-chardev", "socket,id=c,host=::1,port=1"}, sockets: []string{"connect inet6/stream [::1]:1"}},
		{name: "fd", args: []string{"-chardev", "socket,id=c,fd=7,server=on"}, fds: []int{7}},
		{name: "file and log", args: []string{"-chardev", "file,id=f,path=/log/serial.log,logfile=con.log"}, files: []string{"create /vm/con.log", "create /log/serial.log"}},
		{name: "pipe", args: []string{"-chardev", "pipe,id=p,path=/run/p"}, files: []string{"read-write /run/p.in", "read-write /run/p.out", "read-write /run/p"}},
		{name: "tty", args: []string{"-chardev", "tty,id=t,path=/dev/ttyS0"}, devices: []string{"read-write /dev/ttyS0"}},
		{name: "pty", args: []string{"-chardev", "pty,id=p"}, devices: []string{"read-write /dev/ptmx"}},
		{name: "udp", args: []string{"-chardev", "udp,id=u,host=10.0.0.2,port=5000,localaddr=0.0.0.0,localport=5001"}, sockets: []string{"connect inet/dgram 10.0.0.2:5000", "bind inet/dgram 0.0.0.0:5001"}},
		{name: "serial file shorthand", args: []string{"-serial", "file:/log/a,b"}, files: []string{"create /log/a,b"}},
		{name: "qmp unix shorthand", args: []string{"-qmp", "unix:/run/q.sock,server,nowait"}, sockets: []string{"bind unix/stream /run/q.sock"}},
		{name: "monitor tcp shorthand", args: []string{"-monitor", "tcp:127.0.0.1:5555,server=on,wait=off"}, sockets: []string{"bind inet/stream 127.0.0.1:5555"}},
		{name: "telnet any host", args: []string{"-serial", "telnet::4000,server=on"}, sockets: []string{"bind inet/stream :4000"}},
		{name: "mon: prefix", args: []string{"-serial", "mon:unix:/run/s,server=on"}, sockets: []string{"bind unix/stream /run/s"}},
		{name: "udp shorthand", args: []string{"-serial", "udp:10.0.0.2:5000@:5001"}, sockets: []string{"connect inet/dgram 10.0.0.2:5000", "bind inet/dgram :5001"}},
		{name: "pipe shorthand", args: []string{"-parallel", "pipe:/run/par"}, files: []string{"read-write /run/par.in", "read-write /run/par.out", "read-write /run/par"}},
		{name: "device shorthands", args: []string{"-serial", "/dev/ttyUSB0", "-parallel", "/dev/parport0"}, devices: []string{"read-write /dev/ttyUSB0", "read-write /dev/parport0"}},
		{name: "none stdio chardev:", args: []string{"-serial", "none", "-monitor", "stdio", "-serial", "chardev:c0", "-debugcon", "null"}},
		{name: "gdb forces a server", args: []string{"-gdb", "tcp::1234"}, sockets: []string{"bind inet/stream :1234"}},
		{name: "-s", args: []string{"-s"}, sockets: []string{"bind inet/stream :1234"}},
		{name: "braille warns", args: []string{"-chardev", "braille,id=b"}, warn: []string{"brlapi"}},
	})
}

func TestNetdevs(t *testing.T) {
	runCases(t, []deriveCase{
		{name: "user with forwards", args: []string{"-netdev", "user,id=n0,hostfwd=tcp::2222-:22,hostfwd=udp:127.0.0.1:5353-10.0.2.15:53,guestfwd=tcp:10.0.2.100:80-unix:/run/web.sock,tftp=/srv/tftp"},
			netuser: true,
			sockets: []string{"bind inet/stream :2222", "bind inet/dgram 127.0.0.1:5353", "connect unix/stream /run/web.sock"},
			dirs:    []string{"read-only /srv/tftp"}},
		{name: "user restrict", args: []string{"-netdev", "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22"}, sockets: []string{"bind inet/stream 127.0.0.1:2222"}},
		{name: "user json hostfwd", args: []string{"-netdev", `{"type":"user","id":"n0","hostfwd":[{"str":"tcp::80-:80"},{"str":"tcp::443-:443"}]}`}, netuser: true,
			sockets: []string{"bind inet/stream :80", "bind inet/stream :443"}},
		{name: "nic user", bare: true, args: []string{"-accel", "tcg", "-nic", "user,model=virtio-net-pci,hostfwd=tcp::2222-:22"}, netuser: true, sockets: []string{"bind inet/stream :2222"}},
		{name: "net user", bare: true, args: []string{"-accel", "tcg", "-net", "nic", "-net", "user"}, netuser: true},
		{name: "default network", bare: true, args: []string{"-accel", "tcg"}, netuser: true, warn: []string{"QEMU adds a NIC on user-mode networking"}},
		{name: "nodefaults has no network", bare: true, args: []string{"-accel", "tcg", "-nodefaults"}},
		{name: "guestfwd cmd warns", args: []string{"-netdev", "user,id=n,guestfwd=tcp:10.0.2.100:1-cmd:nc host 1"}, netuser: true, warn: []string{"runs a command for each guest connection"}},
		{name: "smb warns", args: []string{"-netdev", "user,id=n,smb=/srv/share"}, netuser: true, dirs: []string{"read-write /srv/share"}, warn: []string{"runs smbd"}},
		{name: "tap with scripts", args: []string{"-netdev", "tap,id=t,ifname=tap0"}, devices: []string{"read-write /dev/net/tun"},
			warn: []string{"script=/etc/qemu-ifup", "downscript=/etc/qemu-ifdown"}},
		{name: "tap no scripts vhost", args: []string{"-netdev", "tap,id=t,ifname=tap0,script=no,downscript=no,vhost=on"}, devices: []string{"read-write /dev/net/tun", "read-write /dev/vhost-net"}},
		{name: "tap fd", args: []string{"-netdev", "tap,id=t,fd=3,vhost=on,vhostfd=4"}, fds: []int{3, 4}},
		{name: "tap fds", args: []string{"-netdev", "tap,id=t,fds=10:11,vhostfds=12:13"}, fds: []int{10, 11, 12, 13}},
		{name: "tap fd name warns", args: []string{"-netdev", "tap,id=t,fd=tapfd"}, warn: []string{`"tapfd" is not an fd number`}},
		{name: "bridge warns", args: []string{"-netdev", "bridge,id=b,br=br0"}, warn: []string{"qemu-bridge-helper"}},
		{name: "socket listen connect", args: []string{"-netdev", "socket,id=a,listen=:1234", "-netdev", "socket,id=b,connect=127.0.0.1:1234"},
			sockets: []string{"bind inet/stream :1234", "connect inet/stream 127.0.0.1:1234"}},
		{name: "socket mcast", args: []string{"-netdev", "socket,id=m,mcast=230.0.0.1:1234,localaddr=10.0.0.1"}, sockets: []string{"bind inet/dgram 230.0.0.1:1234", "connect inet/dgram 230.0.0.1:1234"}},
		{name: "socket udp", args: []string{"-netdev", "socket,id=u,udp=10.0.0.2:2000,localaddr=10.0.0.1:2001"}, sockets: []string{"connect inet/dgram 10.0.0.2:2000", "bind inet/dgram 10.0.0.1:2001"}},
		{name: "stream unix server", args: []string{"-netdev", "stream,id=s,server=on,addr.type=unix,addr.path=/run/net.sock"}, sockets: []string{"bind unix/stream /run/net.sock"}},
		{name: "stream inet json", args: []string{"-netdev", `{"type":"stream","id":"s","server":false,"addr":{"type":"inet","host":"10.1.1.1","port":"7000"}}`}, sockets: []string{"connect inet/stream 10.1.1.1:7000"}},
		{name: "dgram", args: []string{"-netdev", "dgram,id=d,local.type=inet,local.host=0.0.0.0,local.port=8000,remote.type=inet,remote.host=10.0.0.9,remote.port=8001"},
			sockets: []string{"bind inet/dgram 0.0.0.0:8000", "connect inet/dgram 10.0.0.9:8001"}},
		{name: "vhost-user", args: []string{"-chardev", "socket,id=vu,path=/run/vu.sock", "-netdev", "vhost-user,id=v,chardev=vu"}, sockets: []string{"connect unix/stream /run/vu.sock"}},
		{name: "vhost-vdpa", args: []string{"-netdev", "vhost-vdpa,id=v,vhostdev=/dev/vhost-vdpa-0"}, devices: []string{"read-write /dev/vhost-vdpa-0"}},
		{name: "l2tpv3 udp", args: []string{"-netdev", "l2tpv3,id=l,src=10.0.0.1,dst=10.0.0.2,udp=on,srcport=1701,dstport=1701,txsession=1,rxsession=1"},
			sockets: []string{"bind inet/dgram 10.0.0.1:1701", "connect inet/dgram 10.0.0.2:1701"}},
	})
}

func TestDevicesObjectsFsdev(t *testing.T) {
	runCases(t, []deriveCase{
		{name: "romfile absolute", args: []string{"-device", "virtio-net-pci,netdev=n,romfile=/roms/efi.rom"}, files: []string{"read-only /roms/efi.rom"}},
		{name: "romfile in data dirs", args: []string{"-device", "e1000,romfile=efi-e1000.rom"}, files: []string{"read-only efi-e1000.rom (data dirs)"}},
		{name: "romfile in cwd", args: []string{"-device", "e1000,romfile=my.rom"}, fs: chainFS(map[string][]byte{"/vm/my.rom": rawBytes}), files: []string{"read-only /vm/my.rom"}},
		{name: "device json", args: []string{"-device", `{"driver":"virtio-blk-pci","drive":"d0","romfile":"/r.rom"}`}, files: []string{"read-only /r.rom"}},
		{name: "vfio-pci", args: []string{"-device", "vfio-pci,host=0000:01:00.0"}, devices: []string{"read-write /dev/vfio/vfio", "read-write /dev/vfio/*"},
			dirs: []string{"read-only /sys/bus/pci/devices/0000:01:00.0"}, warn: []string{"VFIO group"}},
		{name: "vhost-vsock", args: []string{"-device", "vhost-vsock-pci,guest-cid=3"}, devices: []string{"read-write /dev/vhost-vsock"}},
		{name: "vhost-vsock fd", args: []string{"-device", "vhost-vsock-pci,guest-cid=3,vhostfd=9"}, fds: []int{9}},
		{name: "loader", args: []string{"-device", "loader,file=/fw/blob.elf"}, files: []string{"read-only /fw/blob.elf"}},
		{name: "unknown device path warns", args: []string{"-device", "some-dev,blob=/etc/passwd"}, warn: []string{"blob=/etc/passwd: looks like a path"}},
		{name: "memory backend hugetlbfs dir", args: []string{"-object", "memory-backend-file,id=m,size=1G,mem-path=/dev/hugepages,share=on"},
			fs:   fstest.MapFS{"dev/hugepages": &fstest.MapFile{Mode: 0o755 | 1<<31}, "proc/self/mounts": &fstest.MapFile{Data: []byte("hugetlbfs /dev/hugepages hugetlbfs rw,relatime 0 0\n")}},
			dirs: []string{"create /dev/hugepages"}, devices: []string{"read-write /dev/hugepages"}},
		{name: "memory backend file", args: []string{"-object", "memory-backend-file,id=m,size=1G,mem-path=/shm/vm.mem"}, files: []string{"create /shm/vm.mem"}},
		{name: "memory backend readonly", args: []string{"-object", "memory-backend-file,id=m,size=1G,mem-path=/shm/vm.mem,readonly=on"}, files: []string{"read-only /shm/vm.mem"}},
		{name: "-mem-path", args: []string{"-mem-path", "/shm/m"}, files: []string{"create /shm/m"}},
		{name: "memfd", args: []string{"-object", "memory-backend-memfd,id=m,size=1G,share=on"}},
		{name: "rng-random default", args: []string{"-object", "rng-random,id=r"}, devices: []string{"read-only /dev/urandom"}},
		{name: "rng-random", args: []string{"-object", `{"qom-type":"rng-random","id":"r","filename":"/dev/hwrng"}`}, devices: []string{"read-only /dev/hwrng"}},
		{name: "secret and tls", args: []string{"-object", "secret,id=s,file=/etc/kfv/pw", "-object", "tls-creds-x509,id=t,dir=/etc/pki/qemu,endpoint=server"},
			files: []string{"read-only /etc/kfv/pw"}, dirs: []string{"read-only /etc/pki/qemu"}},
		{name: "filter-dump", args: []string{"-object", "filter-dump,id=f,netdev=n,file=dump.pcap"}, files: []string{"create /vm/dump.pcap"}},
		{name: "fsdev local", args: []string{"-fsdev", "local,id=fs0,path=/srv/share,security_model=mapped-xattr"}, dirs: []string{"create /srv/share"}},
		{name: "virtfs readonly", args: []string{"-virtfs", "local,path=/srv/ro,mount_tag=ro,security_model=none,readonly=on"}, dirs: []string{"read-only /srv/ro"}},
		{name: "fsdev proxy", args: []string{"-fsdev", "proxy,id=p,socket=/run/9p.sock"}, sockets: []string{"connect unix/stream /run/9p.sock"}},
	})
}

func TestMiscOptions(t *testing.T) {
	cfg := `# a QEMU config file
[drive "disk0"]
  file = "/img/cfg.img"
  format = "raw"
  if = "virtio"

[chardev "qmp"]
  backend = "socket"
  path = "/run/cfg.sock"
  server = "on"

[name]
  guest = "fromcfg"
`
	runCases(t, []deriveCase{
		{name: "kernel initrd dtb bios", args: []string{"-kernel", "/boot/vmlinuz", "-initrd", "initrd.img", "-dtb", "/b.dtb", "-bios", "/fw/bios.bin", "-append", "root=/dev/vda console=ttyS0"},
			files: []string{"read-only /boot/vmlinuz", "read-only /vm/initrd.img", "read-only /b.dtb", "read-only /fw/bios.bin"}},
		{name: "multiboot modules", args: []string{"-kernel", "/k", "-initrd", "/m1 arg=1,/m2"}, files: []string{"read-only /k", "read-only /m1", "read-only /m2"}},
		{name: "bios in data dirs", args: []string{"-bios", "bios-256k.bin"}, files: []string{"read-only bios-256k.bin (data dirs)"}},
		{name: "machine files", args: []string{"-machine", "q35,kernel=/k,dumpdtb=out.dtb"}, files: []string{"read-only /k", "create /vm/out.dtb"}},
		{name: "pidfile log dump", args: []string{"-pidfile", "q.pid", "-D", "/log/q.log", "-dump-vmstate", "/tmp/vm.json"}, files: []string{"create /vm/q.pid", "create /log/q.log", "create /tmp/vm.json"}},
		{name: "-L", args: []string{"-L", "/usr/share/seabios", "-L", "help"}, dirs: []string{"read-only /usr/share/seabios"}},
		{name: "name", args: []string{"-name", "guest=web,,1,debug-threads=on"}, check: func(t *testing.T, s *Set) {
			if s.Name != "web,1" {
				t.Errorf("Name = %q", s.Name)
			}
		}},
		{name: "name implied", args: []string{"-name", "vm1"}, check: func(t *testing.T, s *Set) {
			if s.Name != "vm1" {
				t.Errorf("Name = %q", s.Name)
			}
		}},
		{name: "incoming unix", args: []string{"-incoming", "unix:/run/mig.sock"}, sockets: []string{"bind unix/stream /run/mig.sock"}},
		{name: "incoming tcp", args: []string{"-incoming", "tcp:0.0.0.0:4444"}, sockets: []string{"bind inet/stream 0.0.0.0:4444"}},
		{name: "incoming fd", args: []string{"-incoming", "fd:8"}, fds: []int{8}},
		{name: "incoming exec warns", args: []string{"-incoming", "exec:cat /tmp/state"}, warn: []string{"runs a shell command"}},
		{name: "incoming defer", args: []string{"-incoming", "defer"}},
		{name: "loadvm", args: []string{"-loadvm", "snap1"}, check: func(t *testing.T, s *Set) {
			if s.LoadVM != "snap1" {
				t.Errorf("LoadVM = %q", s.LoadVM)
			}
		}},
		{name: "readconfig", args: []string{"-readconfig", "/etc/vm.cfg"}, fs: chainFS(map[string][]byte{"/etc/vm.cfg": []byte(cfg), "/img/cfg.img": rawBytes}),
			files: []string{"read-only /etc/vm.cfg", "read-write /img/cfg.img"}, sockets: []string{"bind unix/stream /run/cfg.sock"},
			check: func(t *testing.T, s *Set) {
				if s.Name != "fromcfg" {
					t.Errorf("Name = %q", s.Name)
				}
				if got := s.Files[1].Option; got != `-readconfig /etc/vm.cfg [drive "disk0"] file= (id=disk0)` {
					t.Errorf("option = %q", got)
				}
			}},
		{name: "readconfig unreadable warns", args: []string{"-readconfig", "/etc/none.cfg"}, files: []string{"read-only /etc/none.cfg"}, warn: []string{"what the file configures is not in the set"}},
		{name: "chroot runas warn", args: []string{"-chroot", "/jail", "-runas", "qemu"}, files: userLookupFiles, sockets: userLookupSockets, warn: []string{"-chroot /jail", "-runas qemu"},
			check: func(t *testing.T, s *Set) {
				if s.RunAs != "qemu" {
					t.Errorf("RunAs %q, want qemu", s.RunAs)
				}
			}},
		{name: "daemonize pidfile", args: []string{"-daemonize", "-pidfile", "/run/vm.pid"}, files: []string{"create /run/vm.pid"}, check: func(t *testing.T, s *Set) {
			if !s.Daemonize || len(s.Warnings) != 0 {
				t.Errorf("Daemonize = %v, warnings %q: want set, none", s.Daemonize, s.Warnings)
			}
		}},
		{name: "kvm", bare: true, args: []string{"-nic", "none", "-enable-kvm"}, devices: []string{"read-write /dev/kvm"}, check: func(t *testing.T, s *Set) {
			if !slices.Equal(s.Accels, []string{"kvm"}) {
				t.Errorf("Accels = %v", s.Accels)
			}
		}},
		{name: "machine accel list", bare: true, args: []string{"-nic", "none", "-machine", "pc,accel=kvm:tcg"}, devices: []string{"read-write /dev/kvm"}},
		{name: "default accels", bare: true, args: []string{"-nic", "none"}, devices: []string{"read-write /dev/kvm"}},
		{name: "tcg only", bare: true, args: []string{"-nic", "none", "-accel", "tcg,thread=multi"}},
		{name: "vnc", args: []string{"-vnc", "127.0.0.1:1,websocket=on", "-vnc", "unix:/run/vnc.sock"},
			sockets: []string{"bind inet/stream 127.0.0.1:5701", "bind inet/stream 127.0.0.1:5901", "bind unix/stream /run/vnc.sock"}},
		{name: "spice", args: []string{"-spice", "port=5930,addr=127.0.0.1,disable-ticketing=on"}, sockets: []string{"bind inet/stream 127.0.0.1:5930"}},
		{name: "display gtk warns", args: []string{"-display", "gtk"}, warn: []string{"X11 or Wayland"}},
		{name: "tpm passthrough", args: []string{"-tpmdev", "passthrough,id=t,path=/dev/tpm0,cancel-path=/sys/class/tpm/tpm0/device/cancel"},
			devices: []string{"read-write /dev/tpm0"}, files: []string{"read-write /sys/class/tpm/tpm0/device/cancel"}},
		{name: "fw_cfg acpitable smbios trace plugin", args: []string{"-fw_cfg", "name=opt/x,file=/x.bin", "-acpitable", "file=/a.aml:/b.aml", "-smbios", "file=/smb.bin", "-trace", "events=/ev,file=/trace.out", "-plugin", "/p.so,arg=1"},
			files: []string{"read-only /x.bin", "read-only /a.aml", "read-only /b.aml", "read-only /smb.bin", "read-only /ev", "create /trace.out", "read-only /p.so"},
			warn:  []string{"-plugin /p.so"}},
		{name: "--double dash", args: []string{"--pidfile", "/p"}, files: []string{"create /p"}},
		{name: "-set path warns", args: []string{"-set", "drive.d0.file=/etc/shadow"}, warn: []string{"-set drive.d0.file=/etc/shadow"}},
		{name: "no resources", args: []string{"-m", "512", "-smp", "2", "-cpu", "max", "-nographic", "-no-reboot", "-S", "-uuid", "0-0", "-k", "en-us", "-rtc", "base=utc", "-boot", "order=c"}},
	})
}

func TestSyntax(t *testing.T) {
	tests := []struct {
		in, implied string
		json        bool
		want        map[string][]string
		wantErr     string
	}{
		{in: "file=/a,,b,if=virtio", want: map[string][]string{"file": {"/a,b"}, "if": {"virtio"}}},
		{in: "a=b,,,,c", want: map[string][]string{"a": {"b,,c"}}},
		{in: "socket,id=x", implied: "backend", want: map[string][]string{"backend": {"socket"}, "id": {"x"}}},
		{in: "id=x,socket", implied: "backend", want: map[string][]string{"id": {"x"}, "socket": {"on"}}},
		{in: "server,nowait", want: map[string][]string{"server": {"on"}, "wait": {"off"}}},
		{in: "hostfwd=a,hostfwd=b", want: map[string][]string{"hostfwd": {"a", "b"}}},
		{in: "k=v=w", want: map[string][]string{"k": {"v=w"}}},
		{in: "", want: map[string][]string{}},
		{in: `{"driver":"file","filename":"/x","opts":{"ro":true,"n":3},"l":["a",null]}`, json: true,
			want: map[string][]string{"driver": {"file"}, "filename": {"/x"}, "opts.ro": {"on"}, "opts.n": {"3"}, "l.0": {"a"}, "l.1": {""}}},
		{in: ` {"a":"b"}`, json: true, want: map[string][]string{"a": {"b"}}},
		{in: `{"a":"b"}`, json: false, wantErr: "not KEY=VALUE"},
		{in: `{"a":`, json: true, wantErr: "JSON"},
		{in: `{"a":1} x`, json: true, wantErr: "after the object"},
		{in: "/path/disk.img", wantErr: "not KEY=VALUE"},
		{in: "=v", wantErr: "empty key"},
		{in: "a=b,,", want: map[string][]string{"a": {"b,"}}},
		{in: "a=b,", wantErr: "empty element"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			o, err := parseOpts(tt.in, tt.implied, tt.json)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseOpts: %v", err)
			}
			if len(o.vals) != len(tt.want) {
				t.Fatalf("got %v, want %v", o.vals, tt.want)
			}
			for k, v := range tt.want {
				if !slices.Equal(o.vals[k], v) {
					t.Errorf("%s = %q, want %q", k, o.vals[k], v)
				}
			}
		})
	}
}

func TestBadCommandLines(t *testing.T) {
	tests := []struct {
		args   []string
		option string
		want   string
	}{
		{args: []string{"-no-such-option"}, option: "-no-such-option", want: "invalid option"},
		{args: []string{"-m=512"}, option: "-m=512", want: `not "-m=VALUE"`},
		{args: []string{"-drive"}, option: "-drive", want: "requires an argument"},
		{args: []string{"-drive", "/disk.img"}, option: "-drive", want: "not KEY=VALUE"},
		{args: []string{"-blockdev", `{"driver":`}, option: "-blockdev", want: "JSON"},
		{args: []string{"-serial", "bogus"}, option: "-serial", want: "not a valid char driver"},
		{args: []string{"-chardev", "nonesuch,id=x"}, option: "-chardev", want: "unknown chardev backend"},
		{args: []string{"-chardev", "socket,id=x,server=maybe,path=/s"}, option: "-chardev", want: "want on or off"},
		{args: []string{"-incoming", "carrier-pigeon:x"}, option: "-incoming", want: "unknown migration protocol"},
		{args: []string{"-netdev", "user,id=n,hostfwd=sctp::1-:1"}, option: "-netdev", want: "want tcp or udp"},
		{args: []string{"-add-fd", "fd=x,set=1"}, option: "-add-fd", want: "fd=x"},
		{args: []string{"-vnc", "host"}, option: "-vnc", want: "HOST:PORT"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := FromArgs(tt.args, "/", fstest.MapFS{})
			var oe *OptionError
			if !errors.As(err, &oe) {
				t.Fatalf("error = %v, want an *OptionError", err)
			}
			if oe.Option != tt.option || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q (option %q), want option %q and %q", err, oe.Option, tt.option, tt.want)
			}
		})
	}
	if _, err := FromArgs(nil, "relative", nil); err == nil {
		t.Error("relative cwd accepted")
	}
}

// libvirt 9 passes -audiodev as JSON.
func TestAudiodevJSON(t *testing.T) {
	s, err := FromArgs([]string{"-audiodev", `{"id":"audio1","driver":"none"}`}, "/", nil)
	if err != nil {
		t.Fatalf("FromArgs of libvirt's JSON -audiodev: %v", err)
	}
	if len(s.Files) != 0 {
		t.Errorf("files %v from a none audiodev", s.Files)
	}
}

// TestMaxVCPUs: the bound on vCPUs follows -smp as QEMU reads it.
func TestMaxVCPUs(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		boot, most int
	}{
		{nil, 1, 1},
		{[]string{"-smp", "2"}, 2, 2},
		{[]string{"-smp", "cpus=2,maxcpus=8"}, 2, 8},
		{[]string{"-smp", "2,sockets=2,cores=2,threads=2"}, 2, 8},
		{[]string{"-smp", "sockets=1,cores=4"}, 4, 4},
		{[]string{"-smp", "maxcpus=4"}, 4, 4},
		{[]string{"-smp", "8,sockets=2"}, 8, 8},
		{[]string{"-smp", "1", "-smp", "4"}, 4, 4},
		{[]string{"-smp", "1,maxcpus=4", "-device", "qemu64-x86_64-cpu,socket-id=1,core-id=0,thread-id=0"}, 2, 4},
		{[]string{"-smp", "1", "-device", "qemu64-x86_64-cpu,socket-id=1"}, 1, 1},
	} {
		s, err := FromArgs(tc.args, "/", fstest.MapFS{})
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if s.VCPUs != tc.boot || s.MaxVCPUs != tc.most {
			t.Errorf("%q: VCPUs %d, MaxVCPUs %d, want %d and %d", tc.args, s.VCPUs, s.MaxVCPUs, tc.boot, tc.most)
		}
	}
	for _, bad := range [][]string{{"-smp", "two"}, {"-smp", "cpus=99999"}, {"-smp", "2,cores=-1"}} {
		if _, err := FromArgs(bad, "/", fstest.MapFS{}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
