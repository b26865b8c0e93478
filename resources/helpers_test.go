package resources

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func itoa(i int) string { return strconv.Itoa(i) }

func equal(a, b []string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return slices.Equal(a, b)
}

// fileList renders Files as "ACCESS ABS" ("ACCESS PATH (data dirs)" for
// data-dir names not found under the working directory).
func fileList(s *Set) []string {
	var out []string
	for _, f := range s.Files {
		p := f.Abs
		if p == "" {
			p = f.Path + " (data dirs)"
		}
		out = append(out, f.Access.String()+" "+p)
	}
	return out
}

func dirList(s *Set) []string {
	var out []string
	for _, d := range s.Dirs {
		out = append(out, d.Access.String()+" "+d.Abs)
	}
	return out
}

func socketList(s *Set) []string {
	var out []string
	for _, k := range s.Sockets {
		out = append(out, fmt.Sprintf("%s %s/%s %s", k.Op, k.Family, k.Type, k.Address))
	}
	return out
}

func deviceList(s *Set) []string {
	var out []string
	for _, d := range s.Devices {
		out = append(out, d.Access.String()+" "+d.Path)
	}
	return out
}

func fdList(s *Set) []int {
	var out []int
	for _, f := range s.FDs {
		out = append(out, f.Num)
	}
	return out
}

// checkWarnings wants every string in want to be part of some warning,
// and every warning to contain one of them: nothing unexpected is
// reported, and nothing expected is lost.
func checkWarnings(t *testing.T, s *Set, want []string) {
	t.Helper()
	for _, w := range want {
		found := false
		for _, got := range s.Warnings {
			if strings.Contains(got, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("no warning contains %q; warnings: %q", w, s.Warnings)
		}
	}
	for _, got := range s.Warnings {
		ok := false
		for _, w := range want {
			if strings.Contains(got, w) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("unexpected warning %q", got)
		}
	}
}
