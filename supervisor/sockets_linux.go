//go:build linux

package supervisor

import "golang.org/x/sys/unix"

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
