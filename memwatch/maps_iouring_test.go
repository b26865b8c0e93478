package memwatch

import "testing"

// An io_uring's rings and SQE array are mappings of the ring fd: their
// backing is what the profile's rules see for an mmap of it (the fd's
// link) and for an mprotect or a KVM memory slot over it (the maps line).
func TestBackingOfIOURing(t *testing.T) {
	maps, err := ParseMaps([]byte("7fba609d6000-7fba609d7000 rw-s 10000000 00:10 2863822                    anon_inode:[io_uring]\n" +
		"7fba609d7000-7fba609d8000 rw-s 00000000 00:10 2863822                    anon_inode:[io_uring]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range maps {
		if got := m.Backing(); got != "anon_inode:[io_uring]" {
			t.Errorf("Backing() = %q, want anon_inode:[io_uring]", got)
		}
		if !m.Shared() || m.Executable() {
			t.Errorf("perms %s: want shared, not executable", m.Perms)
		}
	}
	if got := BackingOf(maps, 0x7fba609d6000, 0x2000); got != "anon_inode:[io_uring]" {
		t.Errorf("BackingOf the two = %q", got)
	}
	if got := (&Mapping{Path: "anon_inode:[io_uring]"}).Backing(); got != "anon_inode:[io_uring]" {
		t.Errorf("the fd's link as a backing = %q", got)
	}
}
