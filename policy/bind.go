package policy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"kfv/profiles"
	"kfv/resources"
)

// InetBindRules turns the inet addresses QEMU's configuration binds
// (hostfwd, VNC and its websocket, chardev socket servers, -incoming tcp:,
// -gdb, netdev socket listen= and udp localaddr=, and what a monitor
// command binds at run time) into two allow rules, never a class of
// addresses:
//
//   - vm-inet-bind: bind of exactly those addresses. A literal IP is that
//     IP; an empty host (QEMU binds the wildcard, 0.0.0.0 or ::, or each
//     address getaddrinfo gives for AI_PASSIVE) is any address on that
//     port; a host name is resolved once, now, with lookup, and each of
//     its addresses is admitted. A port range (VNC to=, chardev to=) is
//     admitted as a range; port 0 (the kernel chooses) as port 0 alone.
//   - vm-inet-listen: listen on a stream socket bound to one of those
//     addresses (the decoder reads the socket's address with getsockname
//     and kfv performs the listen on the socket it checked). For port 0
//     the bound port is the kernel's choice: any port but 0 on that host.
//     A socket that was never bound has port 0 and matches neither rule
//     (listen would bind it to an ephemeral port of every address: a
//     backdoor listener).
//
// Measured on QEMU 7.2 with strace: slirp binds only for hostfwd (tcp: bind
// and listen; udp: bind); the guest's DNS, UDP and ICMP leave through
// unbound sockets (sendto binds them itself), so user networking needs no
// more than its hostfwd addresses. An address that cannot be admitted (a
// host name that does not resolve, a service name for a port) is a warning;
// QEMU's bind of it is then refused.
//
// The rules go after the profile's own rules, like the other rules for the
// VM's resources, so that every refusal of the profile (a bind from a vCPU
// thread) wins.
func InetBindRules(set *resources.Set, lookup func(string) ([]netip.Addr, error)) ([]profiles.VerdictRule, []string) {
	var binds, listens, warnings []string
	for _, so := range set.Sockets {
		if so.Op != resources.OpBind || (so.Family != resources.FamilyInet && so.Family != resources.FamilyInet6) {
			continue
		}
		b, l, err := bindAddresses(so, lookup)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("%s: bind address %q: %v; QEMU's bind of it will be refused", so.Option, so.Address, err))
			continue
		}
		binds = append(binds, b...)
		listens = append(listens, l...)
	}
	var rules []profiles.VerdictRule
	if binds = sortedUnique(binds); len(binds) > 0 {
		rules = append(rules, profiles.VerdictRule{
			Name:      "vm-inet-bind",
			Syscalls:  []string{"bind"},
			Families:  []int{afInet, afInet6},
			Addresses: binds,
			Verdict:   profiles.VerdictAllow,
			Reason:    "the inet addresses and ports QEMU's configuration binds (hostfwd, VNC, chardev and migration listeners)",
		})
	}
	if listens = sortedUnique(listens); len(listens) > 0 {
		rules = append(rules, profiles.VerdictRule{
			Name:      "vm-inet-listen",
			Syscalls:  []string{"listen"},
			Families:  []int{afInet, afInet6},
			Addresses: listens,
			Verdict:   profiles.VerdictAllow,
			Reason:    "listen on a socket bound to an address QEMU's configuration binds (kfv reads the bound address and listens on the socket it checked)",
		})
	}
	return rules, warnings
}

// bindAddresses returns the addresses entries (profiles.ParseAddress) that
// admit the bind of so, and those that admit listen on it once bound
// (none for a datagram socket).
func bindAddresses(so resources.Socket, lookup func(string) ([]netip.Addr, error)) (binds, listens []string, err error) {
	host, port, err := resources.SplitHostPort(so.Address)
	var ae *resources.AddressError
	if errors.As(err, &ae) {
		return nil, nil, errors.New("want " + ae.Want)
	}
	lo, hi, err := portRange(port)
	if err != nil {
		return nil, nil, err
	}
	var prefixes []string
	switch {
	case host == "":
		prefixes = []string{"0.0.0.0/0", "::/0"}
	default:
		ips := []netip.Addr{}
		if ip, perr := netip.ParseAddr(host); perr == nil {
			ips = append(ips, ip)
		} else if ips, err = lookup(host); err != nil || len(ips) == 0 {
			if err == nil {
				err = errors.New("no address")
			}
			return nil, nil, fmt.Errorf("host %q does not resolve (%v)", host, err)
		}
		for _, ip := range ips {
			prefixes = append(prefixes, ip.Unmap().WithZone("").String())
		}
	}
	ports := func(lo, hi uint64) string {
		if lo == hi {
			return strconv.FormatUint(lo, 10)
		}
		return strconv.FormatUint(lo, 10) + "-" + strconv.FormatUint(hi, 10)
	}
	var bindPorts, listenPorts []string
	switch {
	case lo == 0:
		// The kernel chooses the port (QEMU tries port 0 first of a
		// range 0-N, and the kernel's choice succeeds): port 0 alone is
		// bound, and QEMU listens on whatever the kernel gave it.
		bindPorts, listenPorts = []string{"0"}, []string{"1-65535"}
	default:
		bindPorts = []string{ports(lo, hi)}
		listenPorts = bindPorts
	}
	if so.Type != resources.Stream {
		listenPorts = nil
	}
	for _, p := range prefixes {
		for _, n := range bindPorts {
			binds = append(binds, net.JoinHostPort(p, n))
		}
		for _, n := range listenPorts {
			listens = append(listens, net.JoinHostPort(p, n))
		}
	}
	return binds, listens, nil
}

// portRange parses a port of QEMU's configuration: "N" or "FIRST-LAST".
// A service name ("ssh"), which QEMU would look up, is not admitted.
func portRange(port string) (lo, hi uint64, err error) {
	first, last, isRange := strings.Cut(port, "-")
	if lo, err = strconv.ParseUint(first, 10, 16); err != nil {
		return 0, 0, fmt.Errorf("port %q: want a number or FIRST-LAST", port)
	}
	hi = lo
	if isRange {
		if hi, err = strconv.ParseUint(last, 10, 16); err != nil || hi < lo {
			return 0, 0, fmt.Errorf("port range %q: want FIRST-LAST", port)
		}
	}
	return lo, hi, nil
}

func sortedUnique(s []string) []string {
	sort.Strings(s)
	return slices.Compact(s)
}
