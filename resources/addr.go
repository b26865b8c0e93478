package resources

import (
	"fmt"
	"strings"
)

// AddressError is an address that is not HOST:PORT ([ADDRESS]:PORT for
// an IPv6 literal).
type AddressError struct {
	Address string
	// Want is the form expected: "HOST:PORT" or "[ADDRESS]:PORT".
	Want string
}

func (e *AddressError) Error() string { return fmt.Sprintf("%q: want %s", e.Address, e.Want) }

// SplitHostPort splits "host:port", "[v6]:port" or ":port" (every
// address) as QEMU writes inet addresses. An unbracketed host may hold
// colons: the port is after the last one. The port is not checked (QEMU
// takes ranges and service names). The error is an *AddressError.
func SplitHostPort(s string) (host, port string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 || !strings.HasPrefix(s[end+1:], ":") {
			return "", "", &AddressError{Address: s, Want: "[ADDRESS]:PORT"}
		}
		return s[1:end], s[end+2:], nil
	}
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return "", "", &AddressError{Address: s, Want: "HOST:PORT"}
	}
	return s[:i], s[i+1:], nil
}

// joinHostPort writes host:port, bracketing IPv6 literals.
func joinHostPort(host, port string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}

// inetFamily returns FamilyInet6 for IPv6 literals, else FamilyInet (an
// IPv4 literal, a host name or the wildcard).
func inetFamily(host string) string {
	if strings.Contains(host, ":") {
		return FamilyInet6
	}
	return FamilyInet
}
