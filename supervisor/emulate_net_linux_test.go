//go:build linux

package supervisor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"kfv/orch"
	"kfv/profiles"
)

// netMatrixEnv makes the test binary run the listen and TUNSETIFF matrix
// in DIR, instead of running tests.
const netMatrixEnv = "KFV_TEST_NET_MATRIX"

// netResult is what one call of the net matrix observed.
type netResult struct {
	Name  string `json:"name"`
	Errno string `json:"errno"`
	Extra string `json:"extra"`
}

const (
	tunSetIff  = 0x400454ca
	iffTap     = 0x0002
	iffNoPi    = 0x1000
	tunPattern = "kfvtst%d"
)

// runNetMatrix makes each listen and TUNSETIFF of the matrix from this
// process and writes the results to DIR/results.json.
func runNetMatrix(dir string) {
	var res []netResult
	add := func(name string, err error, extra string) {
		r := netResult{Name: name, Extra: extra}
		if err != nil {
			r.Errno = err.Error()
		}
		res = append(res, r)
	}
	inet := func(typ int) int {
		fd, err := unix.Socket(unix.AF_INET, typ, 0)
		if err != nil {
			fmt.Println(err)
			os.Exit(3)
		}
		return fd
	}
	accepting := func(fd int) string {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err != nil {
			return err.Error()
		}
		if v == 0 {
			return "not listening"
		}
		sa, _ := unix.Getsockname(fd)
		c := inet(unix.SOCK_STREAM)
		defer unix.Close(c)
		if err := unix.Connect(c, sa); err != nil {
			return "listening, connect: " + err.Error()
		}
		return "listening, connect ok"
	}

	// Bound, then listened on: allowed; twice updates the backlog.
	s := inet(unix.SOCK_STREAM)
	if err := unix.Bind(s, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	add("listen bound inet", unix.Listen(s, 5), accepting(s))
	add("listen again", unix.Listen(s, 10), accepting(s))
	u, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err := unix.Bind(u, &unix.SockaddrUnix{Name: filepath.Join(dir, "s.sock")}); err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	add("listen bound unix", unix.Listen(u, 1), "")
	d := inet(unix.SOCK_DGRAM)
	unix.Bind(d, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	add("listen bound datagram", unix.Listen(d, 1), "")
	// Never bound: the kernel would pick a port on every address.
	free := inet(unix.SOCK_STREAM)
	add("listen unbound (denied)", unix.Listen(free, 1), accepting(free))

	// TUNSETIFF, where this process may make taps.
	tun, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err == nil {
		ifr := func(name string) []byte {
			b := make([]byte, 40)
			copy(b, name)
			*(*uint16)(unsafe.Pointer(&b[16])) = iffTap | iffNoPi
			return b
		}
		setIff := func(fd int, b []byte) error {
			_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), tunSetIff, uintptr(unsafe.Pointer(&b[0])))
			runtime.KeepAlive(b)
			if e != 0 {
				return e
			}
			return nil
		}
		b := ifr(tunPattern)
		err := setIff(tun, b)
		name := string(b[:bytes.IndexByte(b, 0)])
		extra := "name " + name
		if err == nil {
			_, serr := os.Stat("/sys/class/net/" + name)
			extra = fmt.Sprintf("name from the template %v, exists %v", strings.HasPrefix(name, "kfvtst") && !strings.Contains(name, "%"), serr == nil)
		}
		add("tunsetiff template", err, extra)
		add("tunsetiff attached fd", setIff(tun, ifr(tunPattern)), "")
		f, _ := os.Open(dir)
		add("tunsetiff not a tun", setIff(int(f.Fd()), ifr(tunPattern)), "")
		other, _ := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		add("tunsetiff other name (denied)", setIff(other, ifr("kfvother0")), "")
	}
	out, _ := json.Marshal(res)
	if err := os.WriteFile(filepath.Join(dir, "results.json"), out, 0o600); err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
}

// TestEmulatedListenAndTunSetIff runs the matrix natively and under the
// supervisor, which performs each allowed listen on its copy of the socket
// it checked and each allowed TUNSETIFF on its copy of the tun fd with the
// struct it read: the results must be the same, but for the calls the
// decider refuses (a listen on an unbound socket, another interface name),
// which must fail with EPERM under kfv.
func TestEmulatedListenAndTunSetIff(t *testing.T) {
	dirN, dirE := t.TempDir(), t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(netMatrixEnv, dirN)
	if out, err := runCmd(exe); err != nil {
		t.Fatalf("native matrix: %v\n%s", err, out)
	}
	p := inspectProfile("listen", "ioctl")
	decider := funcDecider(func(r *orch.Request) orch.Decision {
		deny := orch.Decision{Action: profiles.VerdictDeny, Errno: int(unix.EPERM), Rule: "test-deny"}
		switch r.Syscall {
		case "listen":
			// What vm-inet-listen and vm-sockets-bind admit: a bound
			// address, never port 0 or an unnamed socket.
			if r.Sock == nil || (r.Sock.Addr.IsValid() && r.Sock.Addr.Port() == 0) || (r.Sock.Family == unix.AF_UNIX && r.Sock.Path == "") {
				return deny
			}
		case "ioctl":
			if uint32(r.Args[1]) == tunSetIff && (r.Ifreq == nil || r.Ifname != tunPattern) {
				return deny
			}
		}
		return orch.Decision{Action: profiles.VerdictAllow, Rule: "test-allow"}
	})
	t.Setenv(netMatrixEnv, dirE)
	status, evs, err := runSupervised(t, p, decider, Enforce, exe)
	if err != nil || status != 0 {
		t.Fatalf("emulated matrix exited %d: %v\n%s", status, err, eventLines(evs))
	}
	var rn, re []netResult
	for _, x := range []struct {
		dir string
		to  *[]netResult
	}{{dirN, &rn}, {dirE, &re}} {
		b, err := os.ReadFile(filepath.Join(x.dir, "results.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, x.to); err != nil {
			t.Fatal(err)
		}
	}
	if len(rn) != len(re) {
		t.Fatalf("%d native results, %d emulated", len(rn), len(re))
	}
	if len(rn) < 6 {
		t.Log("no /dev/net/tun here: TUNSETIFF cases not run")
	}
	for i := range rn {
		n, e := rn[i], re[i]
		if strings.HasSuffix(n.Name, "(denied)") {
			if n.Errno != "" || e.Errno != unix.EPERM.Error() {
				t.Errorf("%s: native %+v, under kfv %+v: want success natively, EPERM under kfv", n.Name, n, e)
			}
			continue
		}
		if !reflect.DeepEqual(n, e) {
			t.Errorf("%s:\n native   %+v\n emulated %+v", n.Name, n, e)
		}
	}
	performed := 0
	for _, e := range evs {
		if strings.Contains(e.Detail, "emulated") {
			performed++
		}
	}
	if performed < 4 {
		t.Errorf("%d performed calls in the events, want every allowed listen and TUNSETIFF:\n%s", performed, eventLines(evs))
	}
	t.Logf("native %+v", rn)
}

func runCmd(exe string) ([]byte, error) {
	return exec.Command(exe).CombinedOutput()
}
