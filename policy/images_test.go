package policy

import (
	"runtime"
	"slices"
	"testing"

	"kfv/profiles"
	"kfv/resources"
)

// TestIoctlNumbers: the requests the rules name are the profiles' own.
func TestIoctlNumbers(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the numbers are x86_64's")
	}
	for name, v := range map[string]uint64{
		"XFS_IOC_DIOINFO": xfsIocDioinfo, "FS_IOC_FSGETXATTR": fsIocFsgetxattr,
		"FS_IOC_FSSETXATTR": fsIocFssetxattr, "TIOCGPTPEER": tiocgptpeer, "FS_IOC_GETVERSION": fsIocGetversion,
		"KVM_SET_USER_MEMORY_REGION": kvmSetUserMemoryRegion, "KVM_CREATE_VM": kvmCreateVM,
		"KVM_CREATE_VCPU": kvmCreateVCPU, "TUNSETIFF": tunSetIff,
	} {
		if c, ok := profiles.Constant(name); !ok || uint64(c) != v {
			t.Errorf("%s = %#x here, profiles say %#x (%v)", name, v, c, ok)
		}
	}
}

// TestImageRules: the file-attribute ioctls are admitted on the VM's
// images only (and the xattr pair only on those QEMU creates), denied at
// low severity elsewhere; TIOCGPTPEER only with a pty chardev.
func TestImageRules(t *testing.T) {
	set, err := resources.FromArgsEnv([]string{"-accel", "tcg", "-nic", "none",
		"-drive", "file=/img/disk.raw,format=raw,if=virtio,cache=none,aio=native",
		"-drive", "file=/img/ro.raw,format=raw,if=virtio,snapshot=on",
		"-pidfile", "/run/q.pid", "-chardev", "pty,id=c0",
		"-fsdev", "local,id=fs0,path=/srv/share,security_model=none"}, "/vm", []string{"TMPDIR=/scratch"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]profiles.VerdictRule{}
	for _, r := range ResourceRules(set, "/vm", func(p string) string { return p }) {
		byName[r.Name] = r
	}
	for _, c := range []struct {
		rule     string
		requests []uint64
		paths    []string
		verdict  profiles.Verdict
	}{
		{"vm-image-dioinfo", []uint64{xfsIocDioinfo}, []string{"/img/disk.raw", "/img/ro.raw", "/scratch/vl.??????"}, profiles.VerdictAllow},
		{"vm-image-create-xattr", []uint64{fsIocFsgetxattr, fsIocFssetxattr}, []string{"/scratch/vl.??????"}, profiles.VerdictAllow},
		{"image-probe-elsewhere", []uint64{xfsIocDioinfo, fsIocFsgetxattr, fsIocFssetxattr}, nil, profiles.VerdictDeny},
		{"vm-pty-peer", []uint64{tiocgptpeer}, []string{"/dev/ptmx"}, profiles.VerdictAllow},
		{"vm-share-getversion", []uint64{fsIocGetversion}, []string{"/srv/share/**"}, profiles.VerdictAllow},
	} {
		r, ok := byName[c.rule]
		if !ok {
			t.Errorf("no rule %s", c.rule)
			continue
		}
		if !slices.Equal(r.Syscalls, []string{"ioctl"}) || len(r.Args) != 1 || r.Args[0].Index != 1 || r.Args[0].Op != profiles.OpIn || !slices.Equal(r.Args[0].Values, c.requests) {
			t.Errorf("%s: syscalls %q, args %+v; want ioctl with request in %#x", c.rule, r.Syscalls, r.Args, c.requests)
		}
		if !slices.Equal(r.Paths, c.paths) || r.Verdict != c.verdict {
			t.Errorf("%s: paths %q verdict %v, want %q %v", c.rule, r.Paths, r.Verdict, c.paths, c.verdict)
		}
		if r.Verdict == profiles.VerdictDeny && r.Severity != profiles.SevLow {
			t.Errorf("%s: severity %v, want low", c.rule, r.Severity)
		}
	}

	// Without an image or a pty: only the low-severity denial.
	bare, err := resources.FromArgs([]string{"-accel", "tcg", "-nic", "none", "-pidfile", "/run/q.pid"}, "/vm", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ResourceRules(bare, "/vm", func(p string) string { return p }) {
		if slices.Contains(r.Syscalls, "ioctl") && r.Name != "image-probe-elsewhere" {
			t.Errorf("rule %s for a VM without images or ptys", r.Name)
		}
	}
}
