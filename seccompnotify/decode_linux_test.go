//go:build linux

package seccompnotify

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"kfv/orch"
)

// addrOf returns the address of b's first byte. The test keeps b alive.
func addrOf(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }

func cstr(s string) []byte { return append([]byte(s), 0) }

func sockaddrIn(ip [4]byte, port uint16) []byte {
	b := make([]byte, 16)
	binary.NativeEndian.PutUint16(b, unix.AF_INET)
	binary.BigEndian.PutUint16(b[2:], port)
	copy(b[4:], ip[:])
	return b
}

// TestDecodeFabricated decodes notifications fabricated against this very
// process: the decoder reads "the caller's" memory and /proc entries, which
// here are the test's own.
func TestDecodeFabricated(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	names := map[int]string{unix.SYS_OPENAT: "openat", unix.SYS_CONNECT: "connect", unix.SYS_SENDMSG: "sendmsg", unix.SYS_SENDMMSG: "sendmmsg", unix.SYS_SOCKET: "socket", unix.SYS_GETPID: "getpid"}
	d := &Decoder{Names: names}
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	df, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()

	abs := cstr("/etc/../etc/passwd")
	rel := cstr("sub/./file")
	sin := sockaddrIn([4]byte{127, 0, 0, 1}, 4444)
	other := sockaddrIn([4]byte{10, 0, 0, 1}, 53)
	msg := make([]byte, sizeofMsghdr)
	binary.NativeEndian.PutUint64(msg[0:], addrOf(sin))
	binary.NativeEndian.PutUint32(msg[8:], uint32(len(sin)))
	connected := make([]byte, sizeofMsghdr)
	mm := make([]byte, 2*sizeofMmsghdr)
	binary.NativeEndian.PutUint64(mm[0:], addrOf(sin))
	binary.NativeEndian.PutUint32(mm[8:], uint32(len(sin)))
	binary.NativeEndian.PutUint64(mm[sizeofMmsghdr:], addrOf(other))
	binary.NativeEndian.PutUint32(mm[sizeofMmsghdr+8:], uint32(len(other)))

	anon, err := unix.Mmap(-1, 0, 2*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(anon)
	slot := make([]byte, 32)
	binary.NativeEndian.PutUint32(slot[0:], 7)
	binary.NativeEndian.PutUint64(slot[8:], 0xa0000)
	binary.NativeEndian.PutUint64(slot[16:], pageSize)
	binary.NativeEndian.PutUint64(slot[24:], addrOf(anon))
	delSlot := make([]byte, 32)
	names[unix.SYS_MPROTECT] = "mprotect"
	names[unix.SYS_IOCTL] = "ioctl"
	names[unix.SYS_MMAP] = "mmap"

	atcwdFD := int32(unix.AT_FDCWD)
	atcwd := uint64(uint32(atcwdFD))
	cases := []struct {
		name  string
		n     Notif
		check func(t *testing.T, r *orch.Request, err error)
	}{
		{"openat absolute is cleaned", Notif{Nr: unix.SYS_OPENAT, Args: [6]uint64{atcwd, addrOf(abs)}}, func(t *testing.T, r *orch.Request, err error) {
			if err != nil || r.Path != "/etc/passwd" || r.Syscall != "openat" {
				t.Errorf("path %q syscall %q err %v", r.Path, r.Syscall, err)
			}
		}},
		{"openat relative to cwd", Notif{Nr: unix.SYS_OPENAT, Args: [6]uint64{atcwd, addrOf(rel)}}, func(t *testing.T, r *orch.Request, err error) {
			if want := filepath.Join(cwd, "sub/file"); err != nil || r.Path != want {
				t.Errorf("path %q, want %q (err %v)", r.Path, want, err)
			}
		}},
		{"openat relative to dirfd", Notif{Nr: unix.SYS_OPENAT, Args: [6]uint64{uint64(df.Fd()), addrOf(rel)}}, func(t *testing.T, r *orch.Request, err error) {
			if want := filepath.Join(dir, "sub/file"); err != nil || r.Path != want || r.Fds[0] != dir {
				t.Errorf("path %q fds %v, want %q (err %v)", r.Path, r.Fds, want, err)
			}
		}},
		{"openat bad pointer", Notif{Nr: unix.SYS_OPENAT, Args: [6]uint64{atcwd, 8}}, func(t *testing.T, r *orch.Request, err error) {
			if err == nil || r.Path != "" {
				t.Errorf("path %q err %v: want an error and no path", r.Path, err)
			}
		}},
		{"connect inet", Notif{Nr: unix.SYS_CONNECT, Args: [6]uint64{uint64(df.Fd()), addrOf(sin), uint64(len(sin))}}, func(t *testing.T, r *orch.Request, err error) {
			if err != nil || r.Sock == nil || r.Sock.Addr != netip.MustParseAddrPort("127.0.0.1:4444") {
				t.Errorf("sock %+v err %v", r.Sock, err)
			}
		}},
		{"sendmsg with address", Notif{Nr: unix.SYS_SENDMSG, Args: [6]uint64{3, addrOf(msg)}}, func(t *testing.T, r *orch.Request, err error) {
			if err != nil || r.Sock == nil || r.Sock.Addr.Port() != 4444 {
				t.Errorf("sock %+v err %v", r.Sock, err)
			}
		}},
		{"sendmsg connected", Notif{Nr: unix.SYS_SENDMSG, Args: [6]uint64{3, addrOf(connected)}}, func(t *testing.T, r *orch.Request, err error) {
			if err != nil || r.Sock != nil {
				t.Errorf("sock %+v err %v: want none", r.Sock, err)
			}
		}},
		{"sendmmsg different addresses", Notif{Nr: unix.SYS_SENDMMSG, Args: [6]uint64{3, addrOf(mm), 2}}, func(t *testing.T, r *orch.Request, err error) {
			if err != nil || r.Sock == nil || r.Sock.Family != FamilyUnknown {
				t.Errorf("sock %+v err %v: want FamilyUnknown", r.Sock, err)
			}
		}},
		{"sendmsg unreadable header", Notif{Nr: unix.SYS_SENDMSG, Args: [6]uint64{3, 16}}, func(t *testing.T, r *orch.Request, err error) {
			if err == nil || r.Sock == nil || r.Sock.Family != FamilyUnknown {
				t.Errorf("sock %+v err %v: want an error and FamilyUnknown", r.Sock, err)
			}
		}},
		{"socket family", Notif{Nr: unix.SYS_SOCKET, Args: [6]uint64{unix.AF_PACKET, unix.SOCK_RAW}}, func(t *testing.T, r *orch.Request, err error) {
			if r.Sock == nil || r.Sock.Family != unix.AF_PACKET {
				t.Errorf("sock %+v", r.Sock)
			}
		}},
		{"mprotect of anonymous memory", Notif{Nr: unix.SYS_MPROTECT, Args: [6]uint64{addrOf(anon), pageSize, 7}}, func(t *testing.T, r *orch.Request, err error) {
			if err != nil || r.Backing != "anon" {
				t.Errorf("backing %q err %v", r.Backing, err)
			}
		}},
		{"mprotect of this test's text", Notif{Nr: unix.SYS_MPROTECT, Args: [6]uint64{uint64(reflectFuncPC()) &^ (pageSize - 1), pageSize, 7}}, func(t *testing.T, r *orch.Request, err error) {
			exe, _ := os.Executable()
			if err != nil || r.Backing != exe {
				t.Errorf("backing %q err %v, want %q", r.Backing, err, exe)
			}
		}},
		{"mmap anonymous", Notif{Nr: unix.SYS_MMAP, Args: [6]uint64{0, pageSize, 7, unix.MAP_PRIVATE | unix.MAP_ANONYMOUS, ^uint64(0)}}, func(t *testing.T, r *orch.Request, err error) {
			if r.Backing != "anon" {
				t.Errorf("backing %q", r.Backing)
			}
		}},
		{"mmap of a file", Notif{Nr: unix.SYS_MMAP, Args: [6]uint64{0, pageSize, 5, unix.MAP_PRIVATE, uint64(df.Fd())}}, func(t *testing.T, r *orch.Request, err error) {
			if r.Backing != dir {
				t.Errorf("backing %q, want %q", r.Backing, dir)
			}
		}},
		{"kvm memory slot", Notif{Nr: unix.SYS_IOCTL, Args: [6]uint64{uint64(df.Fd()), 0xffffffff_4020ae46, addrOf(slot)}}, func(t *testing.T, r *orch.Request, err error) {
			if err != nil || r.Mem == nil || r.Mem.Slot != 7 || r.Mem.GPA != 0xa0000 || r.Backing != "anon" {
				t.Errorf("mem %+v backing %q err %v", r.Mem, r.Backing, err)
			}
		}},
		{"kvm memory slot deleted", Notif{Nr: unix.SYS_IOCTL, Args: [6]uint64{uint64(df.Fd()), 0x4020ae46, addrOf(delSlot)}}, func(t *testing.T, r *orch.Request, err error) {
			if err != nil || r.Backing != "none" {
				t.Errorf("backing %q err %v", r.Backing, err)
			}
		}},
		{"kvm memory slot unreadable", Notif{Nr: unix.SYS_IOCTL, Args: [6]uint64{uint64(df.Fd()), 0x4020ae46, 24}}, func(t *testing.T, r *orch.Request, err error) {
			if err == nil || r.Backing != "unreadable" {
				t.Errorf("backing %q err %v", r.Backing, err)
			}
		}},
		{"unknown number", Notif{Nr: 999}, func(t *testing.T, r *orch.Request, err error) {
			if r.Syscall != "syscall_999" {
				t.Errorf("syscall %q", r.Syscall)
			}
		}},
		{"thread and process", Notif{Nr: unix.SYS_GETPID}, func(t *testing.T, r *orch.Request, err error) {
			comm, _ := os.ReadFile("/proc/thread-self/comm")
			if r.PID != os.Getpid() || r.TID != tid || r.Thread != strings.TrimSpace(string(comm)) {
				t.Errorf("pid %d tid %d thread %q", r.PID, r.TID, r.Thread)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.n.PID = tid
			var r orch.Request
			err := d.Decode(&c.n, &r)
			c.check(t, &r, err)
		})
	}
	runtime.KeepAlive(abs)
	runtime.KeepAlive(rel)
	runtime.KeepAlive(sin)
	runtime.KeepAlive(other)
	runtime.KeepAlive(msg)
	runtime.KeepAlive(connected)
	runtime.KeepAlive(mm)
	runtime.KeepAlive(slot)
	runtime.KeepAlive(delSlot)
}

// reflectFuncPC returns an address inside this test binary's text.
func reflectFuncPC() uintptr { return reflect.ValueOf(TestDecodeFabricated).Pointer() }

func TestReadStringAcrossPages(t *testing.T) {
	// A string that ends right before an unmapped page must still be read.
	mem, err := unix.Mmap(-1, 0, 2*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	if err := unix.Mprotect(mem[pageSize:], unix.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	s := "/dev/kvm"
	off := pageSize - len(s) - 1
	copy(mem[off:], s)
	mem[pageSize-1] = 0
	got, err := ReadString(os.Getpid(), addrOf(mem[off:]), 4096)
	if err != nil || got != s {
		t.Errorf("ReadString = %q, %v", got, err)
	}
	// No NUL before the unmapped page: an error, not a hang or a panic.
	for i := off; i < pageSize; i++ {
		mem[i] = 'a'
	}
	if _, err := ReadString(os.Getpid(), addrOf(mem[off:]), 4096); err == nil {
		t.Error("ReadString of an unterminated string before a hole succeeded")
	}
	for i := 0; i < 100; i++ {
		mem[i] = 'b'
	}
	if _, err := ReadString(os.Getpid(), addrOf(mem[0:]), 16); err != ErrTooLong {
		t.Errorf("ReadString over the limit: %v, want ErrTooLong", err)
	}
}

func TestParseSockaddr(t *testing.T) {
	unixPath := func(p string, abstract bool) []byte {
		b := make([]byte, 2)
		binary.NativeEndian.PutUint16(b, unix.AF_UNIX)
		if abstract {
			b = append(b, 0)
		}
		return append(b, p...)
	}
	in6 := make([]byte, 28)
	binary.NativeEndian.PutUint16(in6, unix.AF_INET6)
	binary.BigEndian.PutUint16(in6[2:], 8080)
	in6[8+15] = 1
	cases := []struct {
		name    string
		b       []byte
		want    string
		family  int
		wantErr bool
	}{
		{"unix path", append(unixPath("/run/kfv/q.sock", false), 0, 0), "/run/kfv/q.sock", unix.AF_UNIX, false},
		{"unix abstract", unixPath("qemu-x", true), "@qemu-x", unix.AF_UNIX, false},
		{"inet", sockaddrIn([4]byte{10, 0, 2, 2}, 22), "10.0.2.2:22", unix.AF_INET, false},
		{"inet6", in6, "[::1]:8080", unix.AF_INET6, false},
		{"short inet", sockaddrIn([4]byte{1, 2, 3, 4}, 1)[:6], "family 2", unix.AF_INET, true},
		{"too short", []byte{1}, "", 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sa, err := ParseSockaddr(c.b)
			if (err != nil) != c.wantErr {
				t.Fatalf("err %v, want error %v", err, c.wantErr)
			}
			if sa == nil {
				return
			}
			if sa.String() != c.want || sa.Family != c.family {
				t.Errorf("got %q family %d, want %q family %d", sa.String(), sa.Family, c.want, c.family)
			}
		})
	}
}

func FuzzParseSockaddr(f *testing.F) {
	f.Add(sockaddrIn([4]byte{127, 0, 0, 1}, 80))
	f.Add([]byte{1, 0, 0, 'a', 'b'})
	f.Add([]byte{10, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		sa, err := ParseSockaddr(b)
		if err == nil && sa == nil {
			t.Fatal("nil address without error")
		}
		if sa != nil {
			_ = sa.String()
		}
	})
}

func TestAbsPath(t *testing.T) {
	cases := []struct{ base, p, want string }{
		{"/a", "b", "/a/b"},
		{"/a", "/x/../y", "/y"},
		{"/a", "", "/a"},
		{"", "rel", "rel"},
		{"socket:[1]", "x", "x"},
		{"/a/b", "../../../c", "/c"},
	}
	for _, c := range cases {
		if got := absPath(c.base, c.p); got != c.want {
			t.Errorf("absPath(%q, %q) = %q, want %q", c.base, c.p, got, c.want)
		}
	}
}

// TestDecodeThreadTakesMainName: a thread that names itself after its
// process is not taken for the main thread.
func TestDecodeThreadTakesMainName(t *testing.T) {
	pid := os.Getpid()
	main, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	mainName := strings.TrimSuffix(string(main), "\n")
	d := &Decoder{Names: map[int]string{unix.SYS_GETPID: "getpid"}, PID: pid}
	defer d.Close()
	// rename names the calling thread after the process, then "worker",
	// and decodes a call of it under each name. Its thread must not be
	// the main thread and is never unlocked: it ends with its goroutine,
	// and its name with it.
	rename := func() ([]string, error) {
		tid := unix.Gettid()
		var got []string
		for _, name := range []string{mainName, "worker"} {
			b := append([]byte(name), 0)
			err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0)
			runtime.KeepAlive(b)
			if err != nil {
				return nil, err
			}
			var r orch.Request
			d.Decode(&Notif{PID: tid, Nr: unix.SYS_GETPID}, &r)
			got = append(got, r.Thread)
		}
		return got, nil
	}
	runtime.LockOSThread()
	var got []string
	if unix.Gettid() != pid {
		got, err = rename()
	} else {
		// This goroutine holds the main thread, so another one cannot.
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			got, err = rename()
			close(done)
		}()
		<-done
	}
	if err != nil {
		t.Fatal(err)
	}
	want := []string{UnnamedPrefix + mainName, "worker"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("thread names %q, want %q", got, want)
	}
}

// TestOwnThread: a pid argument names QEMU when it is 0 or one of its
// threads; another process, a negative id (a process group) and a
// thread of another process do not.
func TestOwnThread(t *testing.T) {
	self := os.Getpid()
	if !ownThread(self, 0) || !ownThread(self, int32(self)) || !ownThread(self, int32(unix.Gettid())) {
		t.Errorf("the caller or one of its threads is not its own")
	}
	if ownThread(self, 1) || ownThread(self, -int32(self)) || ownThread(1, int32(unix.Gettid())) {
		t.Errorf("init, a process group or a thread of this process counted as another's own")
	}
}

// TestDecodeOwnArgs: a call decoded from its registers alone, its
// caller's name read through an fd kept from an earlier call, needs no
// NOTIF_ID_VALID check (Call.OwnArgs); the first call of a thread (its
// fd opened now, possibly for a thread that took a gone caller's id) and
// a call whose path is read from memory do.
func TestDecodeOwnArgs(t *testing.T) {
	d := &Decoder{Names: map[int]string{unix.SYS_GETPPID: "getppid", unix.SYS_OPENAT: "openat"}, PID: os.Getpid()}
	defer d.Close()
	type step struct {
		name string
		nr   int
		want bool
	}
	steps := []step{
		{"first call: fds opened now", unix.SYS_GETPPID, false},
		{"second call: kept fds", unix.SYS_GETPPID, true},
		{"path read from memory", unix.SYS_OPENAT, false},
		{"registers again", unix.SYS_GETPPID, true},
	}
	got := make([]bool, len(steps))
	done := make(chan struct{})
	go func() {
		// Never unlocked: not the main thread (its own name is compared
		// with the main thread's), and it ends with the goroutine.
		runtime.LockOSThread()
		defer close(done)
		tid := unix.Gettid()
		for i, s := range steps {
			c := Call{N: Notif{PID: tid, Nr: s.nr, Args: [6]uint64{uint64(0xffffff9c), 0}}}
			d.DecodeCall(&c)
			got[i] = c.OwnArgs
		}
	}()
	<-done
	for i, s := range steps {
		if got[i] != s.want {
			t.Errorf("%s: OwnArgs %v, want %v", s.name, got[i], s.want)
		}
	}
	// A thread of another process is named through /proc by its id:
	// never its own arguments.
	c := Call{N: Notif{PID: os.Getppid(), Nr: unix.SYS_GETPPID}}
	d.DecodeCall(&c)
	d.DecodeCall(&c)
	if c.OwnArgs {
		t.Errorf("call of another process: OwnArgs true, want false")
	}
}
