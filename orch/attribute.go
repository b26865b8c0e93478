package orch

import (
	"strconv"
	"strings"
)

// Attribution maps a call to a KungFuVisor layer and a hypervisor resource
// (hRSC), coarsely, from the calling thread's name and the call itself.
// QEMU names its threads when started with -name ...,debug-threads=on;
// without it every thread is called like the main one and all calls land
// on "main-loop".
//
// L3 (monitor commands and what they cause) is not attributed here yet:
// it needs the QMP command that was in flight when the call was made,
// which the supervisor's QMP connection will provide. Until then, calls
// made by the monitor thread are L1 or L2 by what they do, with hRSC
// "monitor".

// threadRule maps thread names to an hRSC. exact matches the whole name;
// otherwise prefix and suffix must both match, and what lies between is
// appended to hrsc (with the vCPU index kept as is).
type threadRule struct {
	exact          string
	prefix, suffix string
	hrsc           string
}

var threadRules = []threadRule{
	{exact: "worker", hrsc: "block-worker"},
	{exact: "IO mon_iothread", hrsc: "monitor"},
	{exact: "call_rcu", hrsc: "rcu"},
	{exact: "vnc_worker", hrsc: "vnc"},
	{exact: "qemu-kvm", hrsc: "main-loop"},
	{prefix: "CPU ", suffix: "/KVM", hrsc: "vcpu"},
	{prefix: "CPU ", suffix: "/TCG", hrsc: "vcpu"},
	{prefix: "IO ", hrsc: "iothread:"},
	// The main thread's comm is the program name cut to 15 bytes:
	// "qemu-system-x86" for qemu-system-x86_64.
	{prefix: "qemu-system-", hrsc: "main-loop", suffix: ""},
}

// vcpuNames holds "vcpu0".."vcpuN" so that attributing a vCPU call does
// not allocate.
var vcpuNames = func() []string {
	out := make([]string, 512)
	for i := range out {
		out[i] = "vcpu" + strconv.Itoa(i)
	}
	return out
}()

// attributeThread returns the hRSC of a thread name.
func attributeThread(name string) string {
	if name == "" {
		return "thread:?"
	}
	for i := range threadRules {
		r := &threadRules[i]
		if r.exact != "" {
			if name == r.exact {
				return r.hrsc
			}
			continue
		}
		if len(name) < len(r.prefix)+len(r.suffix) || !strings.HasPrefix(name, r.prefix) || !strings.HasSuffix(name, r.suffix) {
			continue
		}
		mid := name[len(r.prefix) : len(name)-len(r.suffix)]
		switch r.hrsc {
		case "vcpu":
			n, err := strconv.Atoi(mid)
			if err != nil || n < 0 {
				continue
			}
			if n < len(vcpuNames) {
				return vcpuNames[n]
			}
			return "vcpu" + mid
		case "main-loop":
			return r.hrsc
		default:
			return r.hrsc + mid
		}
	}
	return "thread:" + name
}

// l1Syscalls are the calls that act on the (virtual) hardware: guest and
// code memory. ioctl is L1 when its fd is a hardware fd (l1FdPrefixes).
var l1Syscalls = map[string]bool{
	"mmap": true, "mprotect": true, "pkey_mprotect": true, "mremap": true,
	"munmap": true, "madvise": true, "remap_file_pages": true,
	"mbind": true, "memfd_create": true,
}

// l1FdPrefixes are fd targets (/proc/PID/fd link text) that are hardware
// interfaces: KVM's system, VM and vCPU fds, vhost, tap and VFIO.
var l1FdPrefixes = []string{
	"/dev/kvm",
	"anon_inode:kvm-", // kvm-vm, kvm-vcpu:N
	"/dev/vhost-",
	"/dev/net/tun",
	"/dev/vfio/",
	"anon_inode:[vfio",
}

// Attribute returns the layer and hypervisor resource of a request.
func Attribute(r *Request) (Layer, string) {
	hrsc := attributeThread(r.Thread)
	if l1Syscalls[r.Syscall] {
		return L1, hrsc
	}
	if r.Syscall == "ioctl" {
		if fd, ok := r.Fds[0]; ok {
			for _, p := range l1FdPrefixes {
				if strings.HasPrefix(fd, p) {
					return L1, hrsc
				}
			}
		}
	}
	return L2, hrsc
}
