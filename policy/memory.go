package policy

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"kfv/profiles"
	"kfv/resources"
)

// kvmSetUserMemoryRegion is KVM_SET_USER_MEMORY_REGION (x86_64;
// TestIoctlNumbers checks it against the profiles' names).
const kvmSetUserMemoryRegion = 0x4020ae46

// KVM's requests that make a VM and a vCPU (x86_64; TestIoctlNumbers
// checks them).
const (
	kvmCreateVM   = 0xae01
	kvmCreateVCPU = 0xae41
)

// VCPURuleName names the rule that admits the VM's vCPUs; the monitor
// proxy raises its limit by one for each vCPU a manager hot-plugs.
const VCPURuleName = "vm-kvm-create-vcpu"

// kvmObjectsRuleName is the profile rule the VM's KVM object rules are
// placed before: the built-in profile's refusal of any other VM or vCPU.
const kvmObjectsRuleName = "no-more-kvm-objects"

// KVMObjectRules returns the rules that admit the KVM objects the VM's
// configuration makes: one VM per QEMU process and one vCPU for each the
// VM starts with (set.VCPUs: -smp's cpus and -device CPUs); a vCPU a
// manager hot-plugs over kfv's monitor proxy (device_add of a CPU) raises
// the limit by one (QEMU keeps an unplugged vCPU's fd for the next plug,
// so a replug needs none). A second VM, or a vCPU nobody asked for, made
// after start-up is the first step of many KVM exploits.
func KVMObjectRules(set *resources.Set) []profiles.VerdictRule {
	if !slices.Contains(set.Accels, "kvm") {
		return nil
	}
	vcpus := max(set.VCPUs, 1)
	return []profiles.VerdictRule{{
		Name:     "vm-kvm-create-vm",
		Syscalls: []string{"ioctl"},
		Args:     []profiles.ArgCond{{Index: 1, Op: profiles.OpEq, Values: []uint64{kvmCreateVM}}},
		Limit:    1,
		Verdict:  profiles.VerdictAllow,
		Reason:   "the VM's one KVM VM, made by QEMU's accelerator set-up: once per QEMU process",
	}, {
		Name:     VCPURuleName,
		Syscalls: []string{"ioctl"},
		Args:     []profiles.ArgCond{{Index: 1, Op: profiles.OpEq, Values: []uint64{kvmCreateVCPU}}},
		Limit:    vcpus,
		Verdict:  profiles.VerdictAllow,
		Reason:   fmt.Sprintf("the VM's vCPUs: %d per QEMU process, from -smp and -device on QEMU's command line, and one more for each its manager hot-plugs over the monitor", vcpus),
	}}
}

// kvmObjectRulesAt is where the VM's KVM object rules go: before the
// profile's refusal of further VMs and vCPUs; a profile without it gets
// them first.
func kvmObjectRulesAt(rules []profiles.VerdictRule) int {
	for i, r := range rules {
		if r.Name == kvmObjectsRuleName {
			return i
		}
	}
	return 0
}

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
		switch {
		case !f.Memory || f.Abs == "":
		case f.Pattern: // a name QEMU makes up (memory-backend-shm)
			both(f.Abs)
		default:
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
