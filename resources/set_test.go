package resources

import (
	"reflect"
	"testing"
)

func TestMerge(t *testing.T) {
	disk := File{Path: "d.img", Abs: "/vm/d.img", Access: ReadWrite, Option: "-drive file="}
	iso := File{Path: "/i.iso", Abs: "/i.iso", Access: ReadOnly, Option: "QMP blockdev-change-medium file="}
	sock := Socket{Family: FamilyUnix, Type: Stream, Address: "/run/s", Op: OpConnect, Option: "QMP chardev-add"}
	tests := []struct {
		name        string
		into, other Set
		want        Set
	}{
		{
			name:  "new resources are appended",
			into:  Set{Name: "vm", Files: []File{disk}, Accels: []string{"kvm"}},
			other: Set{Files: []File{iso}, Sockets: []Socket{sock}, FDs: []FD{{Num: 3, Option: "QMP getfd"}}, Warnings: []string{"w"}},
			want: Set{Name: "vm", Files: []File{disk, iso}, Sockets: []Socket{sock}, FDs: []FD{{Num: 3, Option: "QMP getfd"}},
				Accels: []string{"kvm"}, Warnings: []string{"w"}},
		},
		{
			name:  "what s holds is not added again",
			into:  Set{Files: []File{disk}, Warnings: []string{"w"}},
			other: Set{Files: []File{disk, iso, iso}, Warnings: []string{"w", "w"}},
			want:  Set{Files: []File{disk, iso}, Warnings: []string{"w"}},
		},
		{
			name:  "the same path from another option is another entry",
			into:  Set{Files: []File{disk}},
			other: Set{Files: []File{{Path: "d.img", Abs: "/vm/d.img", Access: ReadWrite, Option: "QMP blockdev-add filename="}}},
			want:  Set{Files: []File{disk, {Path: "d.img", Abs: "/vm/d.img", Access: ReadWrite, Option: "QMP blockdev-add filename="}}},
		},
		{
			name:  "user networking and io_uring are turned on, never off",
			into:  Set{IOUring: true},
			other: Set{NetUser: true},
			want:  Set{NetUser: true, IOUring: true},
		},
		{
			name:  "the VM's name, accelerators and snapshot stay",
			into:  Set{Name: "vm", Accels: []string{"kvm"}, LoadVM: "s0"},
			other: Set{Name: "other", Accels: []string{"tcg"}, LoadVM: "s1", Dirs: []Dir{{Path: "/d", Abs: "/d", Access: ReadOnly}}},
			want:  Set{Name: "vm", Accels: []string{"kvm"}, LoadVM: "s0", Dirs: []Dir{{Path: "/d", Abs: "/d", Access: ReadOnly}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.into
			got.Merge(&tc.other)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Merge:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
