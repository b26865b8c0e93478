package supervisor

import (
	"os"
	"reflect"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
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

func TestWithMonitor(t *testing.T) {
	got := withMonitor([]string{"-m", "1"}, 7)
	want := []string{"-m", "1", "-chardev", "socket,id=kfv-monitor,fd=7,server=off", "-mon", "chardev=kfv-monitor,mode=control"}
	if !slices.Equal(got, want) {
		t.Errorf("withMonitor = %q, want %q", got, want)
	}
	kfv, qemu, err := monitorPair()
	if err != nil {
		t.Fatal(err)
	}
	defer kfv.Close()
	defer qemu.Close()
	for _, f := range []*os.File{kfv, qemu} {
		fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
		if err != nil || fl&unix.FD_CLOEXEC == 0 {
			t.Errorf("%s: fd flags %#x, %v: want close-on-exec until handed over", f.Name(), fl, err)
		}
	}
	if _, err := qemu.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := kfv.Read(b); err != nil || b[0] != 'x' {
		t.Errorf("the pair's ends are not connected: %q, %v", b, err)
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
