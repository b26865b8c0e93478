//go:build linux

package supervisor

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"kfv/event"
	"kfv/orch"
	"kfv/profiles"
)

// openMatrixEnv makes the test binary run the open matrix in DIR and
// print its results, instead of running tests.
const openMatrixEnv = "KFV_TEST_OPEN_MATRIX"

// openResult is what one open of the matrix observed.
type openResult struct {
	Name   string `json:"name"`
	FD     int    `json:"fd"`     // the number returned, -1 on error
	Errno  string `json:"errno"`  // on error
	Flags  int    `json:"flags"`  // F_GETFL & interesting bits
	FDFlag int    `json:"fdflag"` // F_GETFD
	Mode   uint32 `json:"mode"`   // st_mode of what was opened
	Size   int64  `json:"size"`
	Extra  string `json:"extra"` // case-specific observation
}

// runOpenMatrix performs every open of the fidelity matrix in dir, from
// this process, and prints one JSON array. It runs both natively and under
// the supervisor's emulation; the test compares the two outputs.
func runOpenMatrix(dir string) {
	unix.Umask(0o027)
	if err := os.Chdir(dir); err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	var res []openResult
	do := func(name string, open func() (int, error), extra func(fd int) string) {
		// The fd a successful open returns must be the lowest free one,
		// as natively: FD is its distance from it (0 when it is).
		lowest, _ := unix.Dup(0)
		unix.Close(lowest)
		fd, err := open()
		r := openResult{Name: name, FD: fd - lowest}
		if err != nil {
			r.FD, r.Errno = 0, err.Error()
			if e, ok := err.(unix.Errno); ok {
				r.Errno = unix.ErrnoName(e)
			}
		} else {
			fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
			r.Flags = fl & (unix.O_ACCMODE | unix.O_APPEND | unix.O_NONBLOCK | unix.O_DIRECT | unix.O_NOATIME | unix.O_SYNC)
			r.FDFlag, _ = unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			var st unix.Stat_t
			if unix.Fstat(fd, &st) == nil {
				r.Mode, r.Size = st.Mode, st.Size
			}
			if extra != nil {
				r.Extra = extra(fd)
			}
			unix.Close(fd)
		}
		res = append(res, r)
	}
	at := func(p string, flags int, mode uint32) func() (int, error) {
		return func() (int, error) { return unix.Openat(unix.AT_FDCWD, p, flags, mode) }
	}
	dfd, err := unix.Open(dir+"/sub", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	defer unix.Close(dfd)
	readAll := func(fd int) string {
		b := make([]byte, 4096)
		n, _ := unix.Read(fd, b)
		if n < 0 {
			n = 0
		}
		return string(b[:n])
	}

	do("read existing", at("file", unix.O_RDONLY, 0), readAll)
	do("read write append", at("file", unix.O_RDWR|unix.O_APPEND|unix.O_CLOEXEC, 0), nil)
	do("absolute path", at(dir+"/file", unix.O_RDONLY, 0), nil)
	do("relative to dirfd", func() (int, error) { return unix.Openat(dfd, "inner", unix.O_RDONLY, 0) }, readAll)
	do("dotdot through dirfd", func() (int, error) { return unix.Openat(dfd, "../file", unix.O_RDONLY, 0) }, nil)
	do("missing", at("missing", unix.O_RDONLY, 0), nil)
	do("create 0666", at("new1", unix.O_CREAT|unix.O_WRONLY, 0o666), nil)
	do("create 0750", at("new2", unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o750), nil)
	do("create exclusive existing", at("file", unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o600), nil)
	do("create in missing dir", at("nodir/x", unix.O_CREAT|unix.O_WRONLY, 0o600), nil)
	do("truncate", at("trunc", unix.O_WRONLY|unix.O_TRUNC, 0), nil)
	do("directory read", at("sub", unix.O_RDONLY, 0), nil)
	do("directory write", at("sub", unix.O_WRONLY, 0), nil)
	do("O_DIRECTORY on file", at("file", unix.O_RDONLY|unix.O_DIRECTORY, 0), nil)
	do("file as directory", at("file/x", unix.O_RDONLY, 0), nil)
	do("symlink followed", at("link", unix.O_RDONLY, 0), readAll)
	do("symlink O_NOFOLLOW", at("link", unix.O_RDONLY|unix.O_NOFOLLOW, 0), nil)
	do("symlink loop", at("loop", unix.O_RDONLY, 0), nil)
	do("nonblock", at("file", unix.O_RDONLY|unix.O_NONBLOCK, 0), nil)
	do("O_PATH", at("file", unix.O_PATH, 0), nil)
	do("read-only file for writing", at("ro", unix.O_WRONLY, 0), nil)
	do("bad dirfd", func() (int, error) { return unix.Openat(987, "x", unix.O_RDONLY, 0) }, nil)
	do("empty path", at("", unix.O_RDONLY, 0), nil)
	do("path at NULL", func() (int, error) {
		cwd := unix.AT_FDCWD
		fd, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(cwd), 0, unix.O_RDONLY, 0, 0, 0)
		if e != 0 {
			return -1, e
		}
		return int(fd), nil
	}, nil)
	do("path too long", at(strings.Repeat("x/", 2100), unix.O_RDONLY, 0), nil)
	do("proc self status", at("/proc/self/status", unix.O_RDONLY, 0), func(fd int) string {
		for _, l := range strings.Split(readAll(fd), "\n") {
			if strings.HasPrefix(l, "Pid:") {
				if strings.TrimSpace(l[4:]) == fmt.Sprint(os.Getpid()) {
					return "own pid"
				}
				return "another pid: " + l
			}
		}
		return "no Pid line"
	})
	do("lowest free fd", func() (int, error) {
		// A hole below an open fd: the open must fill the hole.
		a, _ := unix.Open(dir+"/file", unix.O_RDONLY, 0)
		b, _ := unix.Open(dir+"/file", unix.O_RDONLY, 0)
		unix.Close(a)
		fd, err := unix.Openat(unix.AT_FDCWD, "file", unix.O_RDONLY, 0)
		unix.Close(b)
		if err == nil && fd != a {
			return -1, fmt.Errorf("got fd %d, want the hole %d", fd, a)
		}
		return fd, err
	}, nil)
	res = append(res, socketMatrix(dir)...)
	res = append(res, unlinkMatrix(dir, dfd)...)
	b, err := json.Marshal(res)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "results.json"), b, 0o600)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
}

// setupOpenMatrix makes the files the matrix opens.
func setupOpenMatrix(t *testing.T) string {
	dir := t.TempDir()
	defer socketPeers(t, dir)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "file"), []byte("content\n"), 0o640))
	must(os.WriteFile(filepath.Join(dir, "trunc"), []byte("to be truncated\n"), 0o640))
	must(os.WriteFile(filepath.Join(dir, "ro"), []byte("ro\n"), 0o444))
	must(os.Mkdir(filepath.Join(dir, "sub"), 0o750))
	must(os.WriteFile(filepath.Join(dir, "sub", "inner"), []byte("inner\n"), 0o640))
	must(os.Symlink("file", filepath.Join(dir, "link")))
	must(os.Symlink("loop", filepath.Join(dir, "loop")))
	// For unlinkMatrix.
	for _, f := range []string{"gone1", "gone2", "sub/inner2"} {
		must(os.WriteFile(filepath.Join(dir, f), []byte("x\n"), 0o640))
	}
	must(os.Symlink("file", filepath.Join(dir, "link2")))
	must(os.Mkdir(filepath.Join(dir, "empty"), 0o750))
	must(os.Mkdir(filepath.Join(dir, "full"), 0o750))
	must(os.WriteFile(filepath.Join(dir, "full", "f"), []byte("x\n"), 0o640))
	return dir
}

// unlinkMatrix runs the unlink and unlinkat cases in dir (the matrix's
// working directory); dfd is dir/sub.
func unlinkMatrix(dir string, dfd int) []openResult {
	var res []openResult
	exists := func(p string) string {
		if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
			return p + " exists"
		}
		return p + " gone"
	}
	add := func(name string, err error, extra string) {
		r := openResult{Name: name, Extra: extra}
		if err != nil {
			r.Errno = err.Error()
			if e, ok := err.(unix.Errno); ok {
				r.Errno = unix.ErrnoName(e)
			}
		}
		res = append(res, r)
	}
	rawUnlink := func(p string) error {
		b, err := unix.BytePtrFromString(p)
		if err != nil {
			return err
		}
		if _, _, e := unix.Syscall(unix.SYS_UNLINK, uintptr(unsafe.Pointer(b)), 0, 0); e != 0 {
			return e
		}
		return nil
	}
	at := unix.AT_FDCWD
	add("unlink file", rawUnlink("gone1"), exists("gone1"))
	add("unlinkat file absolute", unix.Unlinkat(at, dir+"/gone2", 0), exists("gone2"))
	add("unlinkat through dirfd", unix.Unlinkat(dfd, "inner2", 0), exists("sub/inner2"))
	add("unlink missing", rawUnlink("missing"), "")
	add("unlink symlink", rawUnlink("link2"), exists("link2")+", "+exists("file"))
	add("unlink directory", rawUnlink("empty"), exists("empty"))
	add("unlink file with slash", rawUnlink("file/"), exists("file"))
	add("unlink directory with slash", rawUnlink("empty/"), exists("empty"))
	add("unlink through a file", rawUnlink("file/x"), "")
	add("unlink in missing dir", rawUnlink("nodir/x"), "")
	add("unlink dot", rawUnlink("."), "")
	add("rmdir non-empty", unix.Unlinkat(at, "full", unix.AT_REMOVEDIR), exists("full"))
	add("rmdir file", unix.Unlinkat(at, "file", unix.AT_REMOVEDIR), exists("file"))
	add("rmdir empty with slash", unix.Unlinkat(at, "empty/", unix.AT_REMOVEDIR), exists("empty"))
	add("unlinkat bad flags", unix.Unlinkat(at, "file", 0x1234), exists("file"))
	add("unlinkat bad dirfd", unix.Unlinkat(987, "x", 0), "")
	add("unlink empty path", rawUnlink(""), "")
	return res
}

func runMatrixNative(t *testing.T, dir string) []byte {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), openMatrixEnv+"="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("native matrix: %v\n%s", err, out)
	}
	return readResults(t, dir)
}

func readResults(t *testing.T, dir string) []byte {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatalf("matrix results: %v", err)
	}
	return b
}

// TestEmulatedOpenFidelity runs the same matrix of opens, connects,
// binds, sends and unlinks natively and under the supervisor, which
// emulates every one (an open: resolve, check, open, install with ADDFD;
// an unlink: resolve the directory, check the entry, remove it there), and
// requires identical results: fd numbers, flags, created modes, errnos,
// what is left on disk.
func TestEmulatedOpenFidelity(t *testing.T) {
	dirN := setupOpenMatrix(t)
	dirE := setupOpenMatrix(t)
	native := runMatrixNative(t, dirN)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := inspectProfile("open", "openat", "creat", "connect", "bind", "sendto", "sendmsg", "sendmmsg", "unlink", "unlinkat")
	var opens int
	allow := funcDecider(func(r *orch.Request) orch.Decision {
		if r.Syscall == "openat" {
			opens++
		}
		return orch.Decision{Action: profiles.VerdictAllow, Rule: "all"}
	})
	t.Setenv(openMatrixEnv, dirE)
	status, evs, err := runSupervised(t, p, allow, Enforce, exe)
	if err != nil || status != 0 {
		t.Fatalf("emulated matrix exited %d: %v\n%s", status, err, eventLines(evs))
	}
	emul := readResults(t, dirE)
	var rn, re []openResult
	if err := json.Unmarshal(native, &rn); err != nil {
		t.Fatalf("native output %q: %v", native, err)
	}
	if err := json.Unmarshal(emul, &re); err != nil {
		t.Fatalf("emulated output %q: %v", emul, err)
	}
	if len(rn) != len(re) {
		t.Fatalf("%d native results, %d emulated", len(rn), len(re))
	}
	failed := false
	defer func() {
		if failed {
			t.Logf("events:\n%s", eventLines(evs))
		}
	}()
	for i := range rn {
		n, e := rn[i], re[i]
		if !reflect.DeepEqual(n, e) {
			t.Errorf("%s:\n native   %+v\n emulated %+v", n.Name, n, e)
			failed = true
		}
	}
	emulated := 0
	for _, e := range evs {
		if e.Kind == event.KindDecision && strings.Contains(e.Detail, "emulated") {
			emulated++
		}
	}
	if emulated < len(rn) {
		t.Errorf("only %d emulated opens in the events for %d cases", emulated, len(rn))
	}
}

func eventLines(evs []event.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s %s verdict=%s applied=%s errno=%s rule=%s %s %s\n", e.Kind, e.Syscall, e.Verdict, e.Applied, e.Errno, e.Rule, e.Args, e.Detail)
	}
	return b.String()
}

// socketMatrix runs the connect, bind and sendto cases. dir holds a
// listening unix socket "srv.sock" (made by the test) and the ports of a
// listening TCP socket and a UDP socket in "ports".
func socketMatrix(dir string) []openResult {
	var res []openResult
	var tcpPort, udpPort int
	if b, err := os.ReadFile(filepath.Join(dir, "ports")); err == nil {
		fmt.Sscan(string(b), &tcpPort, &udpPort)
	}
	errnoOf := func(err error) string {
		if err == nil {
			return ""
		}
		if e, ok := err.(unix.Errno); ok {
			return unix.ErrnoName(e)
		}
		return err.Error()
	}
	add := func(name string, err error, extra string) {
		res = append(res, openResult{Name: name, Errno: errnoOf(err), Extra: extra})
	}
	sock := func(domain, typ int) int {
		fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		return fd
	}
	fd := sock(unix.AF_UNIX, unix.SOCK_STREAM)
	add("unix connect", unix.Connect(fd, &unix.SockaddrUnix{Name: filepath.Join(dir, "srv.sock")}), "")
	unix.Close(fd)
	fd = sock(unix.AF_UNIX, unix.SOCK_STREAM)
	add("unix connect relative", unix.Connect(fd, &unix.SockaddrUnix{Name: "srv.sock"}), "")
	unix.Close(fd)
	fd = sock(unix.AF_UNIX, unix.SOCK_STREAM)
	add("unix connect missing", unix.Connect(fd, &unix.SockaddrUnix{Name: filepath.Join(dir, "none.sock")}), "")
	unix.Close(fd)
	fd = sock(unix.AF_UNIX, unix.SOCK_STREAM)
	err := unix.Bind(fd, &unix.SockaddrUnix{Name: filepath.Join(dir, "bound.sock")})
	mode := ""
	var st unix.Stat_t
	if unix.Stat(filepath.Join(dir, "bound.sock"), &st) == nil {
		mode = fmt.Sprintf("%o", st.Mode)
	}
	add("unix bind", err, mode)
	fd2 := sock(unix.AF_UNIX, unix.SOCK_STREAM)
	add("unix bind in use", unix.Bind(fd2, &unix.SockaddrUnix{Name: filepath.Join(dir, "bound.sock")}), "")
	unix.Close(fd)
	unix.Close(fd2)
	fd = sock(unix.AF_INET, unix.SOCK_STREAM)
	add("tcp connect", unix.Connect(fd, &unix.SockaddrInet4{Port: tcpPort, Addr: [4]byte{127, 0, 0, 1}}), "")
	unix.Close(fd)
	fd = sock(unix.AF_INET, unix.SOCK_STREAM)
	add("tcp connect refused", unix.Connect(fd, &unix.SockaddrInet4{Port: 1, Addr: [4]byte{127, 0, 0, 1}}), "")
	unix.Close(fd)
	fd = sock(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK)
	add("tcp connect nonblocking", unix.Connect(fd, &unix.SockaddrInet4{Port: tcpPort, Addr: [4]byte{127, 0, 0, 1}}), "")
	unix.Close(fd)
	fd = sock(unix.AF_INET, unix.SOCK_DGRAM)
	err = unix.Sendto(fd, []byte("twelve bytes"), 0, &unix.SockaddrInet4{Port: udpPort, Addr: [4]byte{127, 0, 0, 1}})
	add("udp sendto", err, "")
	unix.Close(fd)
	fd = sock(unix.AF_INET, unix.SOCK_STREAM)
	add("connect bad address length", connectRaw(fd, []byte{2, 0}), "")
	unix.Close(fd)
	add("connect bad fd", unix.Connect(999, &unix.SockaddrInet4{Port: tcpPort, Addr: [4]byte{127, 0, 0, 1}}), "")
	res = append(res, sendmsgMatrix(udpPort)...)
	res = append(res, sendmmsgMatrix(udpPort)...)
	return res
}

// sendmsgMatrix runs the sendmsg cases: data in several iovecs with an fd
// in SCM_RIGHTS over a unix stream socketpair (the receiver writes
// through the fd it got), datagrams with and without an address, and the
// errors. Each result records the count sent and what the peer saw.
func sendmsgMatrix(udpPort int) []openResult {
	var res []openResult
	add := func(name string, cnt int, err error, extra string) {
		r := openResult{Name: name, Size: int64(cnt), Extra: extra}
		if err != nil {
			r.Errno = err.Error()
			if e, ok := err.(unix.Errno); ok {
				r.Errno = unix.ErrnoName(e)
			}
		}
		res = append(res, r)
	}
	const ns = unix.MSG_NOSIGNAL
	pair := func() [2]int {
		p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		return p
	}
	p := pair()
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	cnt, err := unix.SendmsgBuffers(p[0], [][]byte{[]byte("three "), []byte("io"), []byte("vecs")}, unix.UnixRights(pipe[1]), nil, ns)
	extra := ""
	buf, oob := make([]byte, 64), make([]byte, 64)
	if n, oobn, _, _, rerr := unix.Recvmsg(p[1], buf, oob, 0); rerr == nil {
		extra = fmt.Sprintf("received %q", buf[:n])
		if cm, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil && len(cm) == 1 {
			if fds, ferr := unix.ParseUnixRights(&cm[0]); ferr == nil && len(fds) == 1 {
				unix.Write(fds[0], []byte("via passed fd"))
				unix.Close(fds[0])
				got := make([]byte, 32)
				k, _ := unix.Read(pipe[0], got)
				extra += fmt.Sprintf(", pipe got %q", got[:max(k, 0)])
			}
		}
	}
	add("sendmsg stream with an fd", cnt, err, extra)
	unix.Close(p[0])
	unix.Close(p[1])
	unix.Close(pipe[0])
	unix.Close(pipe[1])

	p = pair()
	unix.Close(p[1])
	cnt, err = unix.SendmsgN(p[0], []byte("x"), nil, nil, ns)
	add("sendmsg to a closed peer", cnt, err, "")
	cnt, err = unix.SendmsgN(p[0], []byte("x"), unix.UnixRights(987), nil, ns)
	add("sendmsg passing a bad fd", cnt, err, "")
	unix.Close(p[0])

	udp := func() int {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		return fd
	}
	to := &unix.SockaddrInet4{Port: udpPort, Addr: [4]byte{127, 0, 0, 1}}
	fd := udp()
	cnt, err = unix.SendmsgN(fd, []byte("to an address"), nil, to, ns)
	add("sendmsg udp to an address", cnt, err, "")
	cnt, err = unix.SendmsgN(fd, []byte("nowhere"), nil, nil, ns)
	add("sendmsg udp without address", cnt, err, "")
	unix.Close(fd)
	fd = udp()
	unix.Connect(fd, to)
	cnt, err = unix.SendmsgN(fd, []byte("connected"), nil, nil, ns)
	add("sendmsg udp connected", cnt, err, "")
	unix.Close(fd)
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err == nil {
		cnt, err = unix.SendmsgN(pipe[1], []byte("x"), nil, nil, ns)
		add("sendmsg on a pipe", cnt, err, "")
		unix.Close(pipe[0])
		unix.Close(pipe[1])
	}
	return res
}

// mmsghdr is struct mmsghdr on x86_64.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// mmsgs builds a vector of messages: each one's data, its control
// message (nil for none) and its address bytes (nil for none). The iovecs
// live in the returned keep, which must outlive the call.
func mmsgs(msgs ...[3][]byte) ([]mmsghdr, [][]unix.Iovec) {
	v := make([]mmsghdr, len(msgs))
	keep := make([][]unix.Iovec, len(msgs))
	for i, m := range msgs {
		data, oob, to := m[0], m[1], m[2]
		if len(data) > 0 {
			keep[i] = []unix.Iovec{{Base: &data[0]}}
			keep[i][0].SetLen(len(data))
			v[i].hdr.Iov, v[i].hdr.Iovlen = &keep[i][0], 1
		}
		if len(oob) > 0 {
			v[i].hdr.Control = &oob[0]
			v[i].hdr.SetControllen(len(oob))
		}
		if len(to) > 0 {
			v[i].hdr.Name, v[i].hdr.Namelen = &to[0], uint32(len(to))
		}
	}
	return v, keep
}

// sendmmsg sends v; keep is what mmsgs returned with it.
func sendmmsg(fd int, v []mmsghdr, keep [][]unix.Iovec, flags int) (int, error) {
	var p unsafe.Pointer
	if len(v) > 0 {
		p = unsafe.Pointer(&v[0])
	}
	n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(p), uintptr(len(v)), uintptr(flags), 0, 0)
	runtime.KeepAlive(keep)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// inet4 is the raw struct sockaddr_in of 127.0.0.1:port.
func inet4(port int) []byte {
	b := make([]byte, unix.SizeofSockaddrInet4)
	b[0] = unix.AF_INET // little-endian family
	b[2], b[3] = byte(port>>8), byte(port)
	b[4], b[7] = 127, 1
	return b
}

// sendmmsgMatrix sends vectors of messages with sendmmsg: stream and
// datagram, with an fd in SCM_RIGHTS, to one address, connected,
// unaddressed, a message the kernel cannot read in the middle, and the
// errors. Each result records the count sent, each msg_len written back
// and what the peer saw.
func sendmmsgMatrix(udpPort int) []openResult {
	var res []openResult
	add := func(name string, cnt int, err error, v []mmsghdr, extra string) {
		r := openResult{Name: name, Size: int64(cnt), Extra: extra}
		for _, m := range v {
			r.Extra += fmt.Sprintf(" msg_len=%d", m.len)
		}
		if err != nil {
			r.Errno = err.Error()
			if e, ok := err.(unix.Errno); ok {
				r.Errno = unix.ErrnoName(e)
			}
		}
		res = append(res, r)
	}
	const ns = unix.MSG_NOSIGNAL
	die := func(err error) {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
	}
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	die(err)
	var pipe [2]int
	die(unix.Pipe2(pipe[:], unix.O_CLOEXEC))
	v, keep := mmsgs([3][]byte{[]byte("one "), nil, nil}, [3][]byte{[]byte("two "), unix.UnixRights(pipe[1]), nil}, [3][]byte{[]byte("three"), nil, nil})
	cnt, err := sendmmsg(p[0], v, keep, ns)
	extra := ""
	buf, oob := make([]byte, 64), make([]byte, 64)
	got := 0
	for got < len("one two three") {
		n, oobn, _, _, rerr := unix.Recvmsg(p[1], buf[got:], oob, unix.MSG_DONTWAIT)
		if rerr != nil || n == 0 {
			break
		}
		got += n
		if cm, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil && len(cm) == 1 {
			if fds, ferr := unix.ParseUnixRights(&cm[0]); ferr == nil && len(fds) == 1 {
				unix.Write(fds[0], []byte("via passed fd"))
				unix.Close(fds[0])
				b := make([]byte, 32)
				k, _ := unix.Read(pipe[0], b)
				extra += fmt.Sprintf("pipe got %q, ", b[:max(k, 0)])
			}
		}
	}
	extra += fmt.Sprintf("received %q", buf[:got])
	add("sendmmsg stream, three messages, one with an fd", cnt, err, v, extra)
	unix.Close(pipe[0])
	unix.Close(pipe[1])

	// The second message's data cannot be read: the first is sent, and
	// the count says one.
	v, keep = mmsgs([3][]byte{[]byte("first"), nil, nil}, [3][]byte{[]byte("second"), nil, nil})
	// An iovec whose base is an unmapped page: a NULL base with a
	// length does, and needs no pointer conversion.
	bad := []unix.Iovec{{Base: nil}}
	bad[0].SetLen(16)
	v[1].hdr.Iov = &bad[0]
	keep[1] = bad
	cnt, err = sendmmsg(p[0], v, keep, ns)
	n, _ := unix.Read(p[1], buf)
	add("sendmmsg stream, second message unreadable", cnt, err, v, fmt.Sprintf("received %q", buf[:max(n, 0)]))
	v, keep = mmsgs([3][]byte{[]byte("x"), nil, nil})
	cnt, err = sendmmsg(p[0], v[:0], keep, ns)
	add("sendmmsg of no message", cnt, err, nil, "")
	unix.Close(p[1])
	cnt, err = sendmmsg(p[0], v, keep, ns)
	add("sendmmsg to a closed peer", cnt, err, v, "")
	unix.Close(p[0])

	udp := func() int {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		die(err)
		return fd
	}
	to := inet4(udpPort)
	fd := udp()
	v, keep = mmsgs([3][]byte{[]byte("to"), nil, to}, [3][]byte{[]byte("an address"), nil, to})
	cnt, err = sendmmsg(fd, v, keep, ns)
	add("sendmmsg udp, both to one address", cnt, err, v, "")
	v, keep = mmsgs([3][]byte{[]byte("nowhere"), nil, nil})
	cnt, err = sendmmsg(fd, v, keep, ns)
	add("sendmmsg udp without address", cnt, err, v, "")
	unix.Close(fd)
	fd = udp()
	unix.Connect(fd, &unix.SockaddrInet4{Port: udpPort, Addr: [4]byte{127, 0, 0, 1}})
	v, keep = mmsgs([3][]byte{[]byte("con"), nil, nil}, [3][]byte{[]byte("nected"), nil, nil})
	cnt, err = sendmmsg(fd, v, keep, ns)
	add("sendmmsg udp connected", cnt, err, v, "")
	unix.Close(fd)
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC); err == nil {
		v, keep = mmsgs([3][]byte{[]byte("x"), nil, nil})
		cnt, err = sendmmsg(pipe[1], v, keep, ns)
		add("sendmmsg on a pipe", cnt, err, v, "")
		unix.Close(pipe[0])
		unix.Close(pipe[1])
	}
	return res
}

// connectRaw calls connect with raw address bytes.
func connectRaw(fd int, raw []byte) error {
	_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&raw[0])), uintptr(len(raw)))
	if e != 0 {
		return e
	}
	return nil
}

// socketPeers starts, for one run of the matrix in dir, the unix, TCP and
// UDP peers it talks to.
func socketPeers(t *testing.T, dir string) {
	ul, err := net.Listen("unix", filepath.Join(dir, "srv.sock"))
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	uc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ul.Close(); tl.Close(); uc.Close() })
	ports := fmt.Sprintf("%d %d", tl.Addr().(*net.TCPAddr).Port, uc.LocalAddr().(*net.UDPAddr).Port)
	if err := os.WriteFile(filepath.Join(dir, "ports"), []byte(ports), 0o600); err != nil {
		t.Fatal(err)
	}
}
