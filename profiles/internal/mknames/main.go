// Command mknames writes kfv's x86_64 name tables for profiles: syscall
// numbers, errno names and the plain (non-ioctl) constants profiles may use
// in argument conditions. It reads them from golang.org/x/sys/unix, the
// version go.mod pins, so the tables change only when that module does.
//
// Run it with `go generate ./profiles`; it writes syscalls_amd64.go and
// zconsts_amd64.go in the current directory.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// constNames are the constants profiles may name, besides ioctl requests
// (hand-written in ioctls_amd64.go). Keep each group sorted by value order
// of the C header or alphabetically; the output is sorted anyway.
var constNames = []string{
	// socket(2) domains.
	"AF_ALG", "AF_APPLETALK", "AF_AX25", "AF_BLUETOOTH", "AF_CAN", "AF_INET",
	"AF_INET6", "AF_IPX", "AF_KCM", "AF_KEY", "AF_LOCAL", "AF_NETLINK",
	"AF_PACKET", "AF_QIPCRTR", "AF_RDS", "AF_SMC", "AF_TIPC", "AF_UNIX",
	"AF_UNSPEC", "AF_VSOCK", "AF_X25", "AF_XDP",
	// socket(2) types and flags.
	"SOCK_CLOEXEC", "SOCK_DGRAM", "SOCK_NONBLOCK", "SOCK_PACKET", "SOCK_RAW",
	"SOCK_RDM", "SOCK_SEQPACKET", "SOCK_STREAM",
	// clone(2) flags.
	"CLONE_CHILD_CLEARTID", "CLONE_CHILD_SETTID", "CLONE_CLEAR_SIGHAND",
	"CLONE_DETACHED", "CLONE_FILES", "CLONE_FS", "CLONE_INTO_CGROUP",
	"CLONE_IO", "CLONE_NEWCGROUP", "CLONE_NEWIPC", "CLONE_NEWNET",
	"CLONE_NEWNS", "CLONE_NEWPID", "CLONE_NEWTIME", "CLONE_NEWUSER",
	"CLONE_NEWUTS", "CLONE_PARENT", "CLONE_PARENT_SETTID", "CLONE_PIDFD",
	"CLONE_PTRACE", "CLONE_SETTLS", "CLONE_SIGHAND", "CLONE_SYSVSEM",
	"CLONE_THREAD", "CLONE_UNTRACED", "CLONE_VFORK", "CLONE_VM",
	// mmap(2), mprotect(2).
	"PROT_EXEC", "PROT_GROWSDOWN", "PROT_GROWSUP", "PROT_NONE", "PROT_READ",
	"PROT_WRITE",
	"MAP_32BIT", "MAP_ANON", "MAP_ANONYMOUS", "MAP_DENYWRITE",
	"MAP_EXECUTABLE", "MAP_FILE", "MAP_FIXED", "MAP_FIXED_NOREPLACE",
	"MAP_GROWSDOWN", "MAP_HUGETLB", "MAP_LOCKED", "MAP_NONBLOCK",
	"MAP_NORESERVE", "MAP_POPULATE", "MAP_PRIVATE", "MAP_SHARED",
	"MAP_SHARED_VALIDATE", "MAP_STACK", "MAP_SYNC", "MAP_TYPE",
	"MADV_COLD", "MADV_DODUMP", "MADV_DOFORK", "MADV_DONTDUMP",
	"MADV_DONTFORK", "MADV_DONTNEED", "MADV_FREE", "MADV_HUGEPAGE",
	"MADV_KEEPONFORK", "MADV_MERGEABLE", "MADV_NOHUGEPAGE", "MADV_NORMAL",
	"MADV_PAGEOUT", "MADV_RANDOM", "MADV_REMOVE", "MADV_SEQUENTIAL",
	"MADV_UNMERGEABLE", "MADV_WILLNEED", "MADV_WIPEONFORK",
	// open(2) flags.
	"O_ACCMODE", "O_APPEND", "O_ASYNC", "O_CLOEXEC", "O_CREAT", "O_DIRECT",
	"O_DIRECTORY", "O_DSYNC", "O_EXCL", "O_LARGEFILE", "O_NDELAY",
	"O_NOATIME", "O_NOCTTY", "O_NOFOLLOW", "O_NONBLOCK", "O_PATH",
	"O_RDONLY", "O_RDWR", "O_RSYNC", "O_SYNC", "O_TMPFILE", "O_TRUNC",
	"O_WRONLY",
	"AT_EMPTY_PATH", "AT_FDCWD", "AT_NO_AUTOMOUNT", "AT_REMOVEDIR",
	"AT_SYMLINK_FOLLOW", "AT_SYMLINK_NOFOLLOW",
	// fcntl(2) commands and values.
	"FD_CLOEXEC", "F_ADD_SEALS", "F_DUPFD", "F_DUPFD_CLOEXEC", "F_GETFD",
	"F_GETFL", "F_GETLEASE", "F_GETLK", "F_GETOWN", "F_GETOWN_EX",
	"F_GETPIPE_SZ", "F_GETSIG", "F_GET_SEALS", "F_NOTIFY", "F_OFD_GETLK",
	"F_OFD_SETLK", "F_OFD_SETLKW", "F_RDLCK", "F_SEAL_FUTURE_WRITE",
	"F_SEAL_GROW", "F_SEAL_SEAL", "F_SEAL_SHRINK", "F_SEAL_WRITE",
	"F_SETFD", "F_SETFL", "F_SETLEASE", "F_SETLK", "F_SETLKW", "F_SETOWN",
	"F_SETOWN_EX", "F_SETPIPE_SZ", "F_SETSIG", "F_UNLCK", "F_WRLCK",
	// memfd_create(2), eventfd2(2).
	"EFD_CLOEXEC", "EFD_NONBLOCK", "EFD_SEMAPHORE",
	"MFD_ALLOW_SEALING", "MFD_CLOEXEC", "MFD_HUGETLB",
	// prctl(2) options.
	"PR_CAPBSET_READ", "PR_GET_DUMPABLE", "PR_GET_NAME", "PR_GET_NO_NEW_PRIVS",
	"PR_GET_PDEATHSIG", "PR_GET_SECCOMP", "PR_GET_TIMERSLACK", "PR_MCE_KILL",
	"PR_SET_CHILD_SUBREAPER", "PR_SET_DUMPABLE", "PR_SET_MM", "PR_SET_NAME",
	"PR_SET_NO_NEW_PRIVS", "PR_SET_PDEATHSIG", "PR_SET_PTRACER",
	"PR_SET_SECCOMP", "PR_SET_THP_DISABLE", "PR_SET_TIMERSLACK", "PR_SET_VMA",
	// Signals, for kill(2) and friends.
	"SIGABRT", "SIGALRM", "SIGBUS", "SIGCHLD", "SIGCONT", "SIGFPE", "SIGHUP",
	"SIGILL", "SIGINT", "SIGIO", "SIGKILL", "SIGPIPE", "SIGPROF", "SIGPWR",
	"SIGQUIT", "SIGSEGV", "SIGSTKFLT", "SIGSTOP", "SIGSYS", "SIGTERM",
	"SIGTRAP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGUSR1",
	"SIGUSR2", "SIGVTALRM", "SIGWINCH", "SIGXCPU", "SIGXFSZ",
}

// errnoAliases are second names glibc gives some errno values.
var errnoAliases = map[string]string{
	"EDEADLOCK":   "EDEADLK",
	"EOPNOTSUPP":  "ENOTSUP",
	"EWOULDBLOCK": "EAGAIN",
}

func main() {
	out := flag.String("dir", ".", "directory to write the tables to")
	flag.Parse()
	if err := run(*out); err != nil {
		log.Fatalf("mknames: %v", err)
	}
}

func run(outDir string) error {
	dir, err := sysDir()
	if err != nil {
		return err
	}
	consts, err := parseConsts(filepath.Join(dir, "unix", "zsysnum_linux_amd64.go"),
		filepath.Join(dir, "unix", "zerrors_linux.go"),
		filepath.Join(dir, "unix", "zerrors_linux_amd64.go"),
		filepath.Join(dir, "unix", "ztypes_linux.go"))
	if err != nil {
		return err
	}

	var sys bytes.Buffer
	header(&sys)
	sys.WriteString("// syscallTable maps x86_64 syscall names to numbers, sorted by name.\n")
	sys.WriteString("var syscallTable = []nameValue{\n")
	var names []string
	for n := range consts {
		if strings.HasPrefix(n, "SYS_") {
			names = append(names, n)
		}
	}
	rows := make([]row, 0, len(names))
	for _, n := range names {
		rows = append(rows, row{strings.ToLower(strings.TrimPrefix(n, "SYS_")), consts[n]})
	}
	writeRows(&sys, rows, false)
	if err := writeGo(filepath.Join(outDir, "syscalls_amd64.go"), sys.Bytes()); err != nil {
		return err
	}

	var cb bytes.Buffer
	header(&cb)
	cb.WriteString("// errnoTable maps errno names to numbers, sorted by name.\n")
	cb.WriteString("var errnoTable = []nameValue{\n")
	rows = rows[:0]
	byName := map[string]int64{}
	for e := 1; e < 4096; e++ {
		if n := unix.ErrnoName(syscall.Errno(e)); n != "" {
			byName[n] = int64(e)
			rows = append(rows, row{n, int64(e)})
		}
	}
	for alias, target := range errnoAliases {
		v, ok := byName[target]
		if !ok {
			return fmt.Errorf("errno alias %s: %s unknown", alias, target)
		}
		rows = append(rows, row{alias, v})
	}
	writeRows(&cb, rows, false)

	cb.WriteString("\n// constTable maps the plain constants profiles may name to their values,\n// sorted by name. Ioctl requests are in ioctlTable.\n")
	cb.WriteString("var constTable = []nameValue{\n")
	rows = rows[:0]
	for _, n := range constNames {
		v, ok := consts[n]
		if !ok {
			return fmt.Errorf("constant %s not found in golang.org/x/sys/unix", n)
		}
		rows = append(rows, row{n, v})
	}
	writeRows(&cb, rows, true)
	return writeGo(filepath.Join(outDir, "zconsts_amd64.go"), cb.Bytes())
}

type row struct {
	name string
	v    int64
}

func header(b *bytes.Buffer) {
	b.WriteString("// Code generated by profiles/internal/mknames from golang.org/x/sys/unix; DO NOT EDIT.\n\npackage profiles\n\n")
}

func writeRows(b *bytes.Buffer, rows []row, hex bool) {
	sort.Slice(rows, func(i, j int) bool { return rows[i].name < rows[j].name })
	for _, r := range rows {
		if r.v < 0 || !hex {
			fmt.Fprintf(b, "\t{%q, %d},\n", r.name, r.v)
		} else {
			fmt.Fprintf(b, "\t{%q, %#x},\n", r.name, r.v)
		}
	}
	b.WriteString("}\n")
}

func writeGo(path string, src []byte) error {
	f, err := format.Source(src)
	if err != nil {
		return fmt.Errorf("format %s: %w", path, err)
	}
	if err := os.WriteFile(path, f, 0o644); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// sysDir finds golang.org/x/sys in the module cache, at the version go.mod pins.
func sysDir() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "golang.org/x/sys").Output()
	if err != nil {
		return "", fmt.Errorf("locate golang.org/x/sys: %w", err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", errors.New("locate golang.org/x/sys: not downloaded (run go mod download)")
	}
	return dir, nil
}

// parseConsts reads `NAME = literal` and `NAME = syscall.Signal(literal)`
// constants from Go source files.
func parseConsts(files ...string) (map[string]int64, error) {
	consts := map[string]int64{}
	fset := token.NewFileSet()
	for _, path := range files {
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i >= len(vs.Values) {
						continue
					}
					if v, ok := literal(vs.Values[i]); ok {
						consts[name.Name] = v
					}
				}
			}
		}
	}
	return consts, nil
}

func literal(e ast.Expr) (int64, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.INT {
			return 0, false
		}
		v, err := strconv.ParseInt(e.Value, 0, 64)
		return v, err == nil
	case *ast.UnaryExpr:
		if e.Op != token.SUB {
			return 0, false
		}
		v, ok := literal(e.X)
		return -v, ok
	case *ast.CallExpr:
		if len(e.Args) == 1 {
			return literal(e.Args[0])
		}
	}
	return 0, false
}
