//go:build linux

package seccompnotify

import (
	"os"
	"strconv"
	"strings"
)

// hasVCPU reports whether process pid has a vCPU: an fd on a KVM vCPU
// ("anon_inode:kvm-vcpu:N"), or a thread named as QEMU names vCPU
// threads with debug-threads=on, which kfv adds ("CPU N/KVM",
// "CPU N/TCG"). What cannot be read counts as a vCPU: the answer only
// ever admits something when it is false. It is asked only for calls
// that create a process, which QEMU makes before its machine exists
// (-daemonize) or never.
func hasVCPU(pid int) bool {
	if pid <= 0 {
		return true
	}
	base := "/proc/" + strconv.Itoa(pid)
	fds, err := os.ReadDir(base + "/fd")
	if err != nil {
		return true
	}
	for _, e := range fds {
		if t, err := os.Readlink(base + "/fd/" + e.Name()); err == nil && strings.HasPrefix(t, "anon_inode:kvm-vcpu") {
			return true
		}
	}
	tasks, err := os.ReadDir(base + "/task")
	if err != nil {
		return true
	}
	for _, e := range tasks {
		c, err := os.ReadFile(base + "/task/" + e.Name() + "/comm")
		if err != nil {
			continue // the thread is gone
		}
		if name := strings.TrimSuffix(string(c), "\n"); strings.HasPrefix(name, "CPU ") && strings.Contains(name, "/") {
			return true
		}
	}
	return false
}
