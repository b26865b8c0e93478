package policy

import (
	"slices"
	"sort"
	"strings"

	"kfv/profiles"
	"kfv/resources"
)

// kvmSetUserMemoryRegion is KVM_SET_USER_MEMORY_REGION (x86_64;
// TestIoctlNumbers checks it against the profiles' names).
const kvmSetUserMemoryRegion = 0x4020ae46

// memslotRuleName is the profile rule the VM's memory slot rule is placed
// before: the built-in profile's admission of anonymous and memfd memory,
// followed by its refusal of every other slot.
const memslotRuleName = "kvm-memslot-guest-ram"

// MemoryRule returns the rule that admits KVM memory slots over the files
// backing the VM's RAM, from QEMU's command line: a memory-backend-file
// (or -mem-path) file, and the files QEMU creates in such a directory
// (qemu_back_mem.ID.XXXXXX, unlinked at once, so /proc/PID/maps names them
// "PATH (deleted)"). Maps name the canonical path, so the globs are
// canonical. Nothing else gains a slot: another file on the same hugetlbfs
// mount or in the same directory is still refused.
func MemoryRule(set *resources.Set, canon func(string) string) []profiles.VerdictRule {
	var backing []string
	both := func(g string) { backing = append(backing, g, g+" (deleted)") }
	for _, f := range set.Files {
		if f.Memory && f.Abs != "" {
			both(escapeGlob(canon(f.Abs)))
		}
	}
	for _, d := range set.Dirs {
		if d.Memory {
			both(strings.TrimSuffix(escapeGlob(canon(d.Abs)), "/") + "/qemu_back_mem.*")
		}
	}
	if len(backing) == 0 {
		return nil
	}
	sort.Strings(backing)
	return []profiles.VerdictRule{{
		Name:     "vm-memory-backend-slots",
		Syscalls: []string{"ioctl"},
		Args:     []profiles.ArgCond{{Index: 1, Op: profiles.OpEq, Values: []uint64{kvmSetUserMemoryRegion}}},
		Backing:  slices.Compact(backing),
		Verdict:  profiles.VerdictAllow,
		Reason:   "KVM memory slots over the files that back the VM's RAM (memory-backend-file mem-path=, -mem-path), from QEMU's command line",
	}}
}

// memoryRuleAt is where the VM's memory slot rule goes: before the
// profile's own memory slot rules, whose refusal of file-backed slots
// would otherwise win. A profile without them gets it first.
func memoryRuleAt(rules []profiles.VerdictRule) int {
	for i, r := range rules {
		if r.Name == memslotRuleName {
			return i
		}
	}
	for i, r := range rules {
		if r.Verdict == profiles.VerdictDeny && slices.Contains(r.Syscalls, "ioctl") {
			return i
		}
	}
	return len(rules)
}
