package resources

import (
	"encoding/json"
	"slices"
	"testing"
)

// The set names the interfaces QEMU's TUNSETIFF will set: ifname= as
// QEMU cuts it, the kernel's template for a tap without one, none for a
// tap QEMU is handed as an fd.
func TestTapNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"ifname", []string{"-netdev", "tap,id=t,ifname=kfvtap0,script=no,downscript=no"}, []string{"kfvtap0"}},
		{"multiqueue, one name", []string{"-netdev", "tap,id=t,ifname=kfvtap0,queues=4,script=no,downscript=no"}, []string{"kfvtap0"}},
		{"no ifname: the kernel's template", []string{"-netdev", "tap,id=t,script=no,downscript=no"}, []string{"tap%d"}},
		{"cut to IFNAMSIZ-1", []string{"-netdev", "tap,id=t,ifname=abcdefghijklmnopq,script=no,downscript=no"}, []string{"abcdefghijklmno"}},
		{"two taps", []string{"-netdev", "tap,id=a,ifname=ta,script=no,downscript=no", "-nic", "tap,ifname=tb,script=no,downscript=no"}, []string{"ta", "tb"}},
		{"fd given", []string{"-netdev", "tap,id=t,fd=3"}, nil},
		{"fds given", []string{"-netdev", "tap,id=t,fds=3:4"}, nil},
		{"no tap", []string{"-netdev", "user,id=u"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := FromArgsEnv(append([]string{"-accel", "tcg", "-nodefaults"}, tc.args...), "/w", nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.TapNames, tc.want) {
				t.Errorf("TapNames = %q, want %q", s.TapNames, tc.want)
			}
		})
	}
	// A tap hot-plugged over the monitor brings its name, and merging
	// adds it to the VM's set.
	n, err := FromQMP("netdev_add", json.RawMessage(`{"type":"tap","id":"hot","ifname":"kfvhot0","script":"no","downscript":"no"}`), "/w", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(n.Set.TapNames, []string{"kfvhot0"}) {
		t.Errorf("netdev_add: TapNames = %q", n.Set.TapNames)
	}
	vm := &Set{TapNames: []string{"kfvtap0"}}
	vm.Merge(n.Set)
	if !slices.Equal(vm.TapNames, []string{"kfvtap0", "kfvhot0"}) {
		t.Errorf("merged TapNames = %q", vm.TapNames)
	}
}
