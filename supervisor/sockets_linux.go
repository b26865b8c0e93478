//go:build linux

package supervisor

import (
	"golang.org/x/sys/unix"

	"kfv/profiles"
)

// listeningUnixPaths returns the filesystem path of each fd in fds that
// is a listening unix socket: the server sockets a manager bound for QEMU
// and handed over open (libvirt's monitor, -chardev socket,fd=N). QEMU
// removes such a path when it closes the socket, at exit; the path is
// read from the socket itself, so nothing QEMU says widens it.
func listeningUnixPaths(fds []int) []string {
	var paths []string
	for _, fd := range fds {
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
			continue
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			continue
		}
		if u, ok := sa.(*unix.SockaddrUnix); ok && len(u.Name) > 0 && u.Name[0] == '/' {
			paths = append(paths, u.Name)
		}
	}
	return paths
}

// WithServerSocketRule returns p with a rule that lets QEMU unlink the
// server sockets it was handed (ListeningUnixPaths), placed after the
// profile's own rules like the other resources of the VM.
func WithServerSocketRule(p *profiles.Profile, paths []string) *profiles.Profile {
	if len(paths) == 0 {
		return p
	}
	globs := make([]string, 0, len(paths))
	for _, path := range paths {
		globs = append(globs, escapeGlob(path))
		if c := canonical(path); c != path {
			globs = append(globs, escapeGlob(c))
		}
	}
	q := *p
	q.Rules = append(append([]profiles.VerdictRule(nil), p.Rules...), profiles.VerdictRule{
		Name:     "vm-inherited-server-sockets",
		Syscalls: []string{"unlink", "unlinkat"},
		Paths:    globs,
		Verdict:  profiles.VerdictAllow,
		Reason:   "QEMU removes the server sockets its manager bound and handed it open (e.g. libvirt's monitor) when it closes them",
	})
	return &q
}
