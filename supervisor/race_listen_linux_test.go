//go:build linux

package supervisor

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"kfv/orch"
	"kfv/profiles"
)

// listenRaceEnv makes the test binary run the listen race in DIR.
const listenRaceEnv = "KFV_TEST_LISTEN_RACE"

const listenRaceAttempts = 3000

// listenRaceResult is what the racing process observed.
type listenRaceResult struct {
	Listened  int `json:"listened"`  // listen calls that succeeded
	Forbidden int `json:"forbidden"` // of those, on the unbound socket
}

// runListenRace makes listen calls on one fd number while another thread
// keeps swapping, with dup2, a socket bound to 127.0.0.1 (allowed) and an
// unbound one (refused: listen would bind it to an ephemeral port) behind
// that number. It counts the listens that reached the unbound socket.
func runListenRace(dir string) {
	bound, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err := unix.Bind(bound, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	const target = 100
	var unbound atomic.Int32
	fresh := func() {
		u, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		unbound.Store(int32(u))
	}
	fresh()
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer close(done)
		for !stop.Load() {
			unix.Dup2(bound, target)
			unix.Dup2(int(unbound.Load()), target)
		}
	}()
	var res listenRaceResult
	for i := 0; i < listenRaceAttempts; i++ {
		if unix.Listen(target, 1) != nil {
			continue
		}
		res.Listened++
		u := int(unbound.Load())
		if v, err := unix.GetsockoptInt(u, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && v == 1 {
			res.Forbidden++
			fresh() // the old one is bound now
		}
	}
	stop.Store(true)
	<-done
	out, _ := json.Marshal(res)
	if err := os.WriteFile(filepath.Join(dir, "results.json"), out, 0o600); err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
}

// TestListenRace: kfv decides listen on the address the socket is bound
// to and performs it on its own copy, after checking that the copy is the
// socket it decided on, so a dup2 of an unbound socket onto the fd number
// between the decision and the call never makes the kernel listen on it.
// The refusals by that check (rule kfv:listen) show the window was hit.
func TestListenRace(t *testing.T) {
	if testing.Short() {
		t.Skip("a race of thousands of calls")
	}
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	decider := funcDecider(func(r *orch.Request) orch.Decision {
		if r.Syscall == "listen" && r.Sock != nil && r.Sock.Addr.IsValid() && r.Sock.Addr.Port() != 0 {
			return orch.Decision{Action: profiles.VerdictAllow, Rule: "bound"}
		}
		return orch.Decision{Action: profiles.VerdictDeny, Errno: int(unix.EPERM), Rule: "unbound"}
	})
	t.Setenv(listenRaceEnv, dir)
	status, evs, err := runSupervised(t, inspectProfile("listen"), decider, Enforce, exe)
	if err != nil || status != 0 {
		t.Fatalf("race exited %d: %v", status, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res listenRaceResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	rules := map[string]int{}
	for _, e := range evs {
		if e.Syscall == "listen" {
			rules[e.Rule]++
		}
	}
	t.Logf("%d listens of %d succeeded, %d on the unbound socket; decisions by rule %v", res.Listened, listenRaceAttempts, res.Forbidden, rules)
	if res.Forbidden != 0 {
		t.Errorf("%d listens reached the unbound socket", res.Forbidden)
	}
	if res.Listened == 0 || rules["unbound"] == 0 {
		t.Errorf("the race did not alternate (decisions %v): it proves nothing", rules)
	}
	if rules["kfv:listen"] == 0 {
		t.Logf("no swap landed between a decision and its listen in this run")
	}
}
