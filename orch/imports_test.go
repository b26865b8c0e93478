package orch

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"testing"
)

// TestNoKernelImports keeps orch free of the kernel: it decides from a
// decoded request and holds no fds, so that plain `go test` covers it.
// The kernel calls belong to seccompnotify.
func TestNoKernelImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	forbidden := map[string]bool{"golang.org/x/sys/unix": true, "syscall": true, "unsafe": true}
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, is := range f.Imports {
			if p, _ := strconv.Unquote(is.Path.Value); forbidden[p] {
				t.Errorf("%s imports %s", name, p)
			}
		}
	}
}
