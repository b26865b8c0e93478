package profiles

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"kfv/profiles/glob"
)

// Address is a parsed [[rule]] addresses entry.
//
//	"/run/kfv/*.sock"  AF_UNIX path glob
//	"@qemu-*"          AF_UNIX abstract name glob
//	"127.0.0.1"        one IPv4 or IPv6 address, any port
//	"10.0.0.0/8"       a CIDR prefix, any port
//	"127.0.0.1:4444"   address and port; "10.0.0.0/8:53" prefix and port
//	"[::1]:4444"       IPv6 with a port; "[fd00::/8]:53" prefix and port
//	"0.0.0.0/0:5900-5910"  a range of ports, first and last included
//	"127.0.0.1:0"      port 0 itself: a bind that lets the kernel choose
//	                   (only a rule for bind means anything by it)
type Address struct {
	// Unix is the glob for AF_UNIX addresses; nil for inet.
	Unix *glob.Glob
	// Prefix holds inet addresses; a single address is a full-length
	// prefix. IPv4-mapped IPv6 addresses are unmapped before matching.
	Prefix netip.Prefix
	// PortLo and PortHi are the ports matched, both included: 0 and
	// 65535 for an entry without a port (any port), 0 and 0 for port 0
	// itself.
	PortLo, PortHi uint16
}

// ParseAddress parses one addresses entry.
func ParseAddress(s string) (Address, error) {
	if s == "" {
		return Address{}, fmt.Errorf("empty address")
	}
	if s[0] == '/' || s[0] == '@' {
		g, err := glob.Compile(s)
		if err != nil {
			return Address{}, err
		}
		return Address{Unix: g}, nil
	}
	host, port := s, ""
	switch {
	case s[0] == '[':
		end := strings.Index(s, "]")
		if end < 0 {
			return Address{}, fmt.Errorf("address %q: missing \"]\"", s)
		}
		host = s[1:end]
		rest := s[end+1:]
		if !strings.HasPrefix(rest, ":") || len(rest) == 1 {
			return Address{}, fmt.Errorf("address %q: want [IPv6]:PORT", s)
		}
		port = rest[1:]
	case strings.Count(s, ":") == 1:
		i := strings.IndexByte(s, ':')
		host, port = s[:i], s[i+1:]
	}
	a := Address{PortHi: 65535}
	if strings.Contains(host, "/") {
		p, err := netip.ParsePrefix(host)
		if err != nil {
			return Address{}, fmt.Errorf("address %q: bad CIDR prefix %q", s, host)
		}
		if p != p.Masked() {
			return Address{}, fmt.Errorf("address %q: prefix %s has host bits set (did you mean %s?)", s, p, p.Masked())
		}
		a.Prefix = p
	} else {
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return Address{}, fmt.Errorf("address %q: bad IP address %q (unix paths start with / or @)", s, host)
		}
		if ip.Zone() != "" {
			return Address{}, fmt.Errorf("address %q: zones are not supported", s)
		}
		a.Prefix = netip.PrefixFrom(ip, ip.BitLen())
	}
	if a.Prefix.Addr().Is4In6() {
		a.Prefix = netip.PrefixFrom(a.Prefix.Addr().Unmap(), max(a.Prefix.Bits()-96, 0))
	}
	if port != "" {
		lo, hi, err := parsePorts(port)
		if err != nil {
			return Address{}, fmt.Errorf("address %q: bad port %q (want 0..65535 or FIRST-LAST)", s, port)
		}
		a.PortLo, a.PortHi = lo, hi
	}
	return a, nil
}

// parsePorts parses "N" or "FIRST-LAST" (FIRST <= LAST, a range starting
// at 1 or more: port 0 is never part of a range, it is the kernel's
// choice).
func parsePorts(s string) (lo, hi uint16, err error) {
	first, last, isRange := strings.Cut(s, "-")
	l, err := strconv.ParseUint(first, 10, 16)
	if err != nil {
		return 0, 0, err
	}
	if !isRange {
		return uint16(l), uint16(l), nil
	}
	h, err := strconv.ParseUint(last, 10, 16)
	if err != nil || l == 0 || h < l {
		return 0, 0, fmt.Errorf("bad range")
	}
	return uint16(l), uint16(h), nil
}

// MatchUnix reports whether an AF_UNIX address ("/path" or "@abstract")
// matches.
func (a *Address) MatchUnix(path string) bool {
	return a.Unix != nil && a.Unix.Match(path)
}

// MatchInet reports whether an inet address and port match.
func (a *Address) MatchInet(ap netip.AddrPort) bool {
	if a.Unix != nil {
		return false
	}
	if p := ap.Port(); p < a.PortLo || p > a.PortHi {
		return false
	}
	return a.Prefix.Contains(ap.Addr().Unmap())
}
