package resources

import (
	"strings"
	"testing"
	"testing/fstest"
)

// QEMU 10.0's options: -run-with (chroot=, user=, async-teardown=), -shim,
// -perfmap and -jitdump, beside 7.2's.
func TestQEMU10Options(t *testing.T) {
	runCases(t, []deriveCase{
		{name: "run-with user and chroot warn", args: []string{"-run-with", "user=nobody,chroot=/jail"}, files: userLookupFiles, sockets: userLookupSockets, warn: []string{"user=nobody", "chroot=/jail"}},
		{name: "run-with uid:gid", args: []string{"-run-with", "user=64055:64055"}, files: userLookupFiles, sockets: userLookupSockets, warn: []string{"user=64055:64055"}},
		{name: "run-with async-teardown off", args: []string{"-run-with", "async-teardown=off"}},
		{name: "run-with async-teardown on warns", args: []string{"-run-with", "async-teardown=on"}, warn: []string{"async-teardown=on"}},
		{name: "run-with path-like leftover warns", args: []string{"-run-with", "nonesuch=/etc/x"}, warn: []string{"nonesuch=/etc/x"}},
		{name: "async-teardown (7.2) warns", args: []string{"-async-teardown"}, warn: []string{"-async-teardown"}},
		{name: "shim", args: []string{"-kernel", "/boot/vmlinuz", "-shim", "shimx64.efi"}, files: []string{"read-only /boot/vmlinuz", "read-only /vm/shimx64.efi"}},
		{name: "machine shim", args: []string{"-machine", "q35,shim=/efi/shim.efi"}, files: []string{"read-only /efi/shim.efi"}},
		{name: "perfmap", args: []string{"-perfmap"}, files: []string{"create /tmp/perf-[0-9]*.map"}, check: func(t *testing.T, s *Set) {
			if len(s.Files) != 1 || !s.Files[0].Pattern {
				t.Errorf("files %+v: want one pattern", s.Files)
			}
		}},
		{name: "jitdump warns", args: []string{"-jitdump"}, warn: []string{"-jitdump"}},
		{name: "7.2 and 10.0 options on one line", args: []string{"-no-hpet", "-perfmap", "-runas", "qemu"}, files: append([]string{"create /tmp/perf-[0-9]*.map"}, userLookupFiles...), sockets: userLookupSockets, warn: []string{"-runas qemu"}},
	})
}

func TestQEMU10OptionErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-shim"}, "requires an argument"},
		{[]string{"-run-with"}, "requires an argument"},
		{[]string{"-run-with", "/jail"}, "not KEY=VALUE"},
		{[]string{"-perfmap=on"}, "invalid option"},
		{[]string{"-no-such-option"}, "neither QEMU 7.2 nor 10.0"},
	} {
		_, err := FromArgs(tt.args, "/", fstest.MapFS{})
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.args[0]) {
			t.Errorf("%q: error %v, want one naming %s and saying %q", tt.args, err, tt.args[0], tt.want)
		}
	}
}
