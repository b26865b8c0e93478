package layers

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// rank is each package's layer: a package may import only packages of a
// lower rank. A package missing here fails the test, so that a new one
// is placed on purpose (and docs/architecture.md says where).
var rank = map[string]int{
	// Data and leaves: what every other package may use.
	"kfv/sysent":                    0,
	"kfv/profiles/glob":             0,
	"kfv/event":                     0,
	"kfv/guest":                     0,
	"kfv/profiles":                  1,
	"kfv/metrics":                   1,
	"kfv/resources":                 1,
	"kfv/memwatch":                  1,
	"kfv/qmp":                       1,
	"kfv/orch":                      2,
	"kfv/profiles/learn":            2,
	"kfv/policy":                    2,
	"kfv/qmpproxy":                  2,
	"kfv/seccompnotify":             3,
	"kfv/supervisor":                4,
	"kfv/cmd/kfv-run":               5,
	"kfv/memwatch/memwatchtest":     5,
	"kfv/profiles/internal/mknames": 5,
	"kfv/guest/mkguests":            5,
	"kfv/bench":                     6,
	"kfv/tools/demo":                6,
	"kfv/integration":               6,
	"kfv/internal/layers":           6,
}

// kernelFree are the packages that decide or derive: they must build and
// be tested anywhere, so they import nothing of the kernel.
var kernelFree = []string{"kfv/sysent", "kfv/profiles", "kfv/resources", "kfv/orch", "kfv/policy", "kfv/event"}

type pkg struct {
	ImportPath string
	Imports    []string
}

func list(t *testing.T) []pkg {
	t.Helper()
	// go test puts its own GOROOT/bin first in the test's PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command: %v", err)
	}
	cmd := exec.Command(goBin, "list", "-json", "kfv/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestImportsGoDown(t *testing.T) {
	for _, p := range list(t) {
		r, ok := rank[p.ImportPath]
		if !ok {
			t.Errorf("%s has no layer: add it to rank (and to docs/architecture.md)", p.ImportPath)
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, "kfv/") {
				continue
			}
			if ri, ok := rank[imp]; ok && ri >= r {
				t.Errorf("%s (layer %d) imports %s (layer %d): imports go down only", p.ImportPath, r, imp, ri)
			}
		}
	}
}

func TestKernelFree(t *testing.T) {
	imports := map[string][]string{}
	for _, p := range list(t) {
		imports[p.ImportPath] = p.Imports
	}
	for _, name := range kernelFree {
		imps, ok := imports[name]
		if !ok {
			t.Errorf("%s: no such package", name)
			continue
		}
		for _, imp := range imps {
			if imp == "golang.org/x/sys/unix" || imp == "syscall" || imp == "unsafe" {
				t.Errorf("%s imports %s: it decides or derives, and must not touch the kernel", name, imp)
			}
		}
	}
}
