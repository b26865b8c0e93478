package supervisor

import (
	"os"
	"reflect"
	"slices"
	"testing"
)

func TestWithDebugThreads(t *testing.T) {
	cases := []struct{ in, want []string }{
		{[]string{"-m", "64"}, []string{"-m", "64", "-name", "debug-threads=on"}},
		{[]string{"-name", "guest=vm1"}, []string{"-name", "guest=vm1,debug-threads=on"}},
		{[]string{"-name", "vm1,debug-threads=off"}, []string{"-name", "vm1,debug-threads=off"}},
	}
	for _, c := range cases {
		if got := withDebugThreads(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("WithDebugThreads(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestWithIncomingDefer(t *testing.T) {
	got := withIncomingDefer([]string{"-m", "64", "-incoming", "tcp:0:4444", "-S"})
	want := []string{"-m", "64", "-S", "-incoming", "defer"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestPrivateMonitor(t *testing.T) {
	dir, sock, err := privateMonitor()
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("private dir mode %v, %v; want 0700", fi.Mode(), err)
	}
	if got := withMonitor([]string{"-m", "1"}, sock); got[len(got)-1] != "unix:"+sock+",server=on,wait=off" {
		t.Errorf("WithMonitor = %q", got)
	}
}

func TestWithHeldStart(t *testing.T) {
	for _, tc := range []struct {
		args []string
		held bool
	}{
		{[]string{"-m", "16"}, true},
		{[]string{"-S", "-m", "16"}, false},              // libvirt holds the guest itself
		{[]string{"-m", "16", "--S"}, false},             // QEMU takes both spellings
		{[]string{"-incoming", "defer"}, false},          // -S would keep a migrated guest stopped
		{[]string{"-name", "-S,debug-threads=on"}, true}, // an option's value is no option
	} {
		got, held := withHeldStart(tc.args)
		if held != tc.held {
			t.Errorf("withHeldStart(%q) held = %v, want %v", tc.args, held, tc.held)
		}
		want := tc.args
		if tc.held {
			want = append(append([]string(nil), tc.args...), "-S")
		}
		if !slices.Equal(got, want) {
			t.Errorf("withHeldStart(%q) = %q, want %q", tc.args, got, want)
		}
	}
}
