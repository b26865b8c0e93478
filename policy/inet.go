package policy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"

	"kfv/profiles"
	"kfv/resources"
	"kfv/sysent"
)

// Address families for inet rules (x86_64 values).
const (
	afInet  = 2
	afInet6 = 10
)

// inetRulesAt returns where the VM's inet addresses go among a profile's
// rules: after the rules that refuse sockets to some threads (a vCPU
// thread connecting anywhere is a payload, whatever the address), before
// the first other rule about connects and sends, so that a profile rule
// that keeps payloads off the host's loopback does not refuse a chardev
// the operator pointed at 127.0.0.1.
func inetRulesAt(rules []profiles.VerdictRule) int {
	for i, r := range rules {
		sends := slices.ContainsFunc(r.Syscalls, func(sc string) bool {
			e, ok := sysent.Lookup(sc)
			return ok && e.Effect == sysent.SendToAddress
		})
		if sends && !(r.Verdict == profiles.VerdictDeny && len(r.Threads) > 0) {
			return i
		}
	}
	return len(rules)
}

// InetRules turns the inet addresses QEMU's command line connects to
// (socket chardevs and netdevs, NBD over TCP, migration targets...) into
// one allow rule for connect and for sends with an address, placed by
// inetRulesAt: the operator named these addresses. Host names are
// resolved once, at launch, with lookup; a name that does not resolve,
// or a port that is not a single number, is reported in the warnings and
// gets no rule (QEMU's connect to it is then refused, and says so in the
// event stream).
func InetRules(set *resources.Set, lookup func(string) ([]netip.Addr, error)) ([]profiles.VerdictRule, []string) {
	var addrs, warnings []string
	seen := map[string]bool{}
	for _, so := range set.Sockets {
		if so.Op != resources.OpConnect || (so.Family != resources.FamilyInet && so.Family != resources.FamilyInet6) {
			continue
		}
		host, port, err := resources.SplitHostPort(so.Address)
		var ae *resources.AddressError
		if errors.As(err, &ae) {
			err = errors.New("want " + ae.Want) // the warning names the address
		}
		if err == nil {
			var n uint64
			if n, err = strconv.ParseUint(port, 10, 16); err == nil && n == 0 {
				err = fmt.Errorf("port 0")
			}
		}
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("%s: connect address %q: %v; QEMU's connect to it will be refused", so.Option, so.Address, err))
			continue
		}
		if host == "" {
			host = "localhost" // QEMU's default for a socket without host=
		}
		ips := []netip.Addr{}
		if ip, err := netip.ParseAddr(host); err == nil {
			ips = append(ips, ip)
		} else if ips, err = lookup(host); err != nil || len(ips) == 0 {
			if err == nil {
				err = fmt.Errorf("no address")
			}
			warnings = append(warnings, fmt.Sprintf("%s: host %q does not resolve (%v); QEMU's connect to it will be refused", so.Option, host, err))
			continue
		}
		for _, ip := range ips {
			s := net.JoinHostPort(ip.Unmap().WithZone("").String(), port)
			if !seen[s] {
				seen[s] = true
				addrs = append(addrs, s)
			}
		}
	}
	if len(addrs) == 0 {
		return nil, warnings
	}
	sort.Strings(addrs)
	return []profiles.VerdictRule{{
		Name:      "vm-inet-connect",
		Syscalls:  slices.Clone(sendCalls),
		Families:  []int{afInet, afInet6},
		Addresses: addrs,
		Verdict:   profiles.VerdictAllow,
		Reason:    "the inet addresses QEMU's command line connects to",
	}}, warnings
}
