package sysent

import (
	"slices"
	"testing"
)

// The lists kfv kept in separate places before the table existed: the
// table must reproduce them, so that moving to it changed no behaviour.
func TestTableKeepsTheOldLists(t *testing.T) {
	t.Run("performed", func(t *testing.T) {
		want := []string{"open", "openat", "creat", "connect", "bind", "sendto", "sendmsg", "sendmmsg", "unlink", "unlinkat", "io_uring_setup",
			// A writable 9p share's file work.
			"mkdir", "mkdirat", "mknod", "mknodat", "rename", "renameat", "renameat2", "link", "linkat",
			"symlink", "symlinkat", "chmod", "fchmodat", "fchmodat2", "chown", "fchownat", "lchown", "utimensat",
			// On a copy of the fd: listen (the bound address), ioctl (TUNSETIFF).
			"listen", "ioctl"}
		sameSet(t, Select((*Entry).Performed), want)
	})
	t.Run("by reference, continued", func(t *testing.T) {
		want := []string{"openat2", "open_by_handle_at", "execve", "execveat",
			"rmdir", "truncate", "utimes", "futimesat",
			"setxattr", "lsetxattr", "removexattr", "lremovexattr", "mount", "umount2",
			"pivot_root", "chroot", "swapon", "swapoff", "acct", "quotactl"}
		sameSet(t, Select((*Entry).ContinuesByReference), want)
	})
	t.Run("equivalents", func(t *testing.T) {
		want := map[Effect][]string{
			OpenFiles:       {"openat", "open", "openat2", "creat", "open_by_handle_at"},
			RunPrograms:     {"execve", "execveat"},
			CreateProcesses: {"clone", "clone3", "fork", "vfork"},
			SendSignals:     {"kill", "tgkill", "tkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal"},
			ReachProcesses:  {"ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd"},
			MakeExecutable:  {"mmap", "mprotect", "pkey_mprotect", "remap_file_pages"},
			SendToAddress:   {"connect", "sendto", "sendmsg", "sendmmsg"},
			RenameFiles:     {"rename", "renameat", "renameat2"},
			LinkFiles:       {"link", "linkat"},
			MakeSymlinks:    {"symlink", "symlinkat"},
			RemoveFiles:     {"unlink", "unlinkat", "rmdir"},
			MakeDirs:        {"mkdir", "mkdirat"},
			MakeNodes:       {"mknod", "mknodat"},
			ChmodByPath:     {"chmod", "fchmodat", "fchmodat2"},
			ChownByPath:     {"chown", "fchownat", "lchown"},
		}
		got := map[Effect][]string{}
		for _, g := range Equivalents() {
			got[g.Effect] = g.Names
		}
		if len(got) != len(want) {
			t.Errorf("%d groups, want %d", len(got), len(want))
		}
		for e, names := range want {
			// The first name is the one messages use: order matters.
			if !slices.Equal(got[e], names) {
				t.Errorf("%s: %v, want %v", e, got[e], names)
			}
		}
	})
}

func sameSet(t *testing.T, got, want []string) {
	t.Helper()
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Errorf("got %v\nwant %v", g, w)
	}
}

// Every row must be consistent with itself: an object kind that matches
// its arguments, a performer only where there is something to perform.
func TestRowsAreConsistent(t *testing.T) {
	seen := map[string]bool{}
	for i := range table {
		e := &table[i]
		t.Run(e.Name, func(t *testing.T) {
			if seen[e.Name] {
				t.Fatal("listed twice")
			}
			seen[e.Name] = true
			switch {
			case e.PathArg >= 0 && e.Object != Path:
				t.Errorf("path argument %d but object %s", e.PathArg, e.Object)
			case (e.SockaddrArg >= 0 || e.MsgArg >= 0) && e.Object != Address:
				t.Errorf("address argument but object %s", e.Object)
			case e.DirFDArg >= 0 && e.PathArg < 0:
				t.Error("a directory fd without a path")
			case (e.Path2Arg >= 0 || e.DirFD2Arg >= 0) && (e.PathArg < 0 || e.Path2Arg < 0):
				t.Error("a second path without a first, or a second directory fd without a second path")
			case e.SockaddrArg >= 0 && e.SockLenArg < 0:
				t.Error("a socket address without its length")
			}
			if e.Performed() && !e.ByReference() && !e.Creates() && !e.OnCopy() {
				t.Errorf("performed (%s) but names nothing in the caller's memory and creates nothing", e.Perform)
			}
			if e.Perform >= NumPerformers {
				t.Errorf("performer %d out of range", e.Perform)
			}
			if e.Lookup && (e.Performed() || e.Effect != NoEffect) {
				t.Error("a lookup that is performed or has an effect")
			}
			if e.FlagsArg >= 0 && e.Effect != OpenFiles {
				t.Error("open flags on a call that opens nothing")
			}
		})
	}
}

func TestNames(t *testing.T) {
	for p := PerformNone; p < NumPerformers; p++ {
		if p.String() == "" || p.String() == "performer?" {
			t.Errorf("performer %d has no name", p)
		}
	}
	for e := NoEffect + 1; e < numEffects; e++ {
		if e.String() == "" {
			t.Errorf("effect %d has no name", e)
		}
	}
}
