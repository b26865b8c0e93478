package policy

import (
	"kfv/profiles"
	"kfv/resources"
)

// getaddrinfo's AI_ADDRCONFIG probe, x86_64 values (this package builds
// on every OS): socket(AF_NETLINK, SOCK_RAW|SOCK_CLOEXEC, NETLINK_ROUTE).
const (
	afNetlink    = 16
	sockRawCloex = 0x3 | 0x80000
	netlinkRoute = 0
	eafnosupport = 97
)

// AddrConfigRuleName names the rule AddrConfigRule makes.
const AddrConfigRuleName = "vm-addrconfig-probe"

// AddrConfigRule returns, for a VM whose command line has QEMU connect to
// an inet address (a chardev or netdev socket client, NBD, migration),
// a kernel rule that fails glibc's AI_ADDRCONFIG probe without an event,
// and nil for any other. QEMU resolves such an address with getaddrinfo
// and AI_ADDRCONFIG (inet_connect_saddr, measured on QEMU 7.2 and 10.0),
// and glibc asks the kernel over a NETLINK_ROUTE socket which address
// families the host has (__check_pf); when the socket cannot be made it
// takes both, and the connection is made as before. The socket itself
// could reconfigure the host's network from a QEMU running as root, so it
// stays refused; only this exact socket, and only for such a VM, is
// refused without the high-severity event of rule no-host-network-control.
func AddrConfigRule(set *resources.Set) []profiles.SyscallRule {
	for _, so := range set.Sockets {
		if so.Op == resources.OpConnect && (so.Family == resources.FamilyInet || so.Family == resources.FamilyInet6) {
			return []profiles.SyscallRule{{
				Name:   AddrConfigRuleName,
				Names:  []string{"socket"},
				Action: profiles.ActDeny,
				Errno:  eafnosupport,
				Silent: true,
				Args: []profiles.ArgCond{
					{Index: 0, Op: profiles.OpEq, Values: []uint64{afNetlink}},
					{Index: 1, Op: profiles.OpEq, Values: []uint64{sockRawCloex}},
					{Index: 2, Op: profiles.OpEq, Values: []uint64{netlinkRoute}},
				},
				Reason: "getaddrinfo's AI_ADDRCONFIG probe for QEMU's connect to " + so.Address + " (" + so.Option + "): without it glibc assumes both address families; the netlink socket stays refused, silently",
			}}
		}
	}
	return nil
}
