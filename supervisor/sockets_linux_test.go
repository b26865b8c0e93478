//go:build linux

package supervisor

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func fdOf(t *testing.T, f interface{ File() (*os.File, error) }) int {
	t.Helper()
	file, err := f.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { file.Close() })
	return int(file.Fd())
}

func TestListeningUnixPaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "monitor.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	abstract, err := net.ListenUnix("unix", &net.UnixAddr{Name: "@kfv-test-" + filepath.Base(dir), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer abstract.Close()
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dgram, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "dgram.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer dgram.Close()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	fds := []int{fdOf(t, ln), fdOf(t, abstract), fdOf(t, conn), fdOf(t, dgram), int(f.Fd()), 1 << 20}
	got := listeningUnixPaths(fds)
	if want := []string{path}; !slices.Equal(got, want) {
		t.Errorf("ListeningUnixPaths = %q, want %q (only the listening socket with a path)", got, want)
	}

}
