package integration

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"kfv/guest"
)

// implantCFlags are gcc's flags for the implant; they are part of its
// cache key.
var implantCFlags = []string{"-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror"}

var (
	implantMu    sync.Mutex
	implantBuilt string

	attackLinuxOnce sync.Once
	attackLinux     *guest.Linux
	attackLinuxErr  error
)

// buildImplant compiles integration/implant/implant.c with gcc into the
// guest cache (named by a hash of the source and flags, so an unchanged
// source is compiled once) and returns the shared object's path. It
// skips without gcc.
func buildImplant(t *testing.T) string {
	t.Helper()
	implantMu.Lock()
	defer implantMu.Unlock()
	if implantBuilt != "" {
		return implantBuilt
	}
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not in PATH: apt-get install gcc linux-libc-dev (builds the test implant)")
	}
	src := filepath.Join(repoRoot, "integration", "implant", "implant.c")
	code, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("read implant source: %v", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%q\n", implantCFlags)
	h.Write(code)
	out := filepath.Join(guestDir, "implant-"+hex.EncodeToString(h.Sum(nil))[:12]+".so")
	if _, err := os.Stat(out); err == nil {
		implantBuilt = out
		return out
	}
	if err := os.MkdirAll(guestDir, 0o755); err != nil {
		t.Fatalf("create guest cache: %v", err)
	}
	tmp := fmt.Sprintf("%s.tmp%d", out, os.Getpid())
	args := append(append([]string{}, implantCFlags...), "-o", tmp, src)
	if b, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %v: %v\n%s", args, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		t.Fatalf("install implant: %v", errors.Join(err, os.Remove(tmp)))
	}
	implantBuilt = out
	return out
}

// attackLinuxGuest builds the Linux guest once per test binary.
func attackLinuxGuest(t *testing.T) *guest.Linux {
	t.Helper()
	attackLinuxOnce.Do(func() { attackLinux, attackLinuxErr = guest.BuildLinux(guestDir) })
	if attackLinuxErr != nil {
		t.Fatalf("build the Linux guest (make guests): %v", attackLinuxErr)
	}
	return attackLinux
}

// startEnv is start with extra environment variables for the child.
func startEnv(t *testing.T, argv []string, env ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(argv[0], argv[1:]...), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.Env = append(os.Environ(), env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// exited says whether p has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// implantReport is what the implant printed about one payload.
type implantReport struct {
	Loaded []int  // pids of "kfv-implant: loaded pid=N"
	TID    int    // the thread that ran the payload ("trigger" line)
	Thread string // its name
	Result string // ok, fail, exec (exec-shell, before execve); "" if none
	Detail string
	Lines  []string // every kfv-implant line
}

var (
	implantLoadedRE  = regexp.MustCompile(`^kfv-implant: loaded pid=(\d+)$`)
	implantTriggerRE = regexp.MustCompile(`^kfv-implant: trigger payload=(\S+) arg=\S* tid=(\d+) thread=(.*)$`)
	implantResultRE  = regexp.MustCompile(`^kfv-implant: payload=(\S+) result=(\S+) detail=(.*)$`)
)

// parseImplant reads the implant's lines about payload from stderr. The
// last result line wins (exec-shell prints "exec" before its execve and
// "fail" if the execve fails).
func parseImplant(stderr, payload string) implantReport {
	var r implantReport
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "kfv-implant: ")
		if i < 0 {
			continue
		}
		line = line[i:]
		r.Lines = append(r.Lines, line)
		if m := implantLoadedRE.FindStringSubmatch(line); m != nil {
			pid, _ := strconv.Atoi(m[1]) // the pattern admits digits only
			r.Loaded = append(r.Loaded, pid)
		} else if m := implantTriggerRE.FindStringSubmatch(line); m != nil && m[1] == payload {
			r.TID, _ = strconv.Atoi(m[2])
			r.Thread = m[3]
		} else if m := implantResultRE.FindStringSubmatch(line); m != nil && m[1] == payload {
			r.Result, r.Detail = m[2], m[3]
		}
	}
	return r
}

func (r implantReport) loadedIn(pid int) bool {
	for _, p := range r.Loaded {
		if p == pid {
			return true
		}
	}
	return false
}
