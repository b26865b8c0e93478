package learn

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kfv/event"
	"kfv/profiles"
)

func stream(t *testing.T, evs ...event.Event) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	for _, e := range evs {
		j, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(append(j, '\n'))
	}
	return &b
}

func decision(syscall, args, verdict, rule string) event.Event {
	return event.Event{Kind: event.KindDecision, Source: "seccomp", Syscall: syscall, Args: args, Verdict: verdict, Rule: rule, Thread: "qemu-system-x86"}
}

// TestLearn: a denied open beside the VM's disk is learned; calls of the
// dangerous classes are left to the operator, each with its reason.
func TestLearn(t *testing.T) {
	vm := t.TempDir()
	disk := filepath.Join(vm, "disk.vmdk")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	extent := filepath.Join(vm, "disk-f001.vmdk")
	open := func(path string, flags string) string {
		return `path="` + path + `" args=[0xffffff9c 0x1 ` + flags + ` 0x0 0x0 0x0]`
	}
	in := stream(t,
		event.Event{Kind: event.KindLifecycle, Source: "supervisor", Detail: "starting /usr/bin/qemu-system-x86_64 under profile builtin:qemu (498 BPF instructions), sync wake-up on"},
		decision("openat", open(vm, "0x0"), "allow", "vm-read-only-openat"), // the working directory: no VM directory above it
		decision("openat", open(disk, "0x80002"), "allow", "vm-read-write-openat"),
		decision("openat", open(extent, "0x80000"), "deny", "default"),
		decision("openat", open(extent, "0x80800"), "deny", "default"), // the same access: one rule
		decision("openat", open(extent, "0x80002"), "deny", "default"), // read-write: a rule of its own
		decision("openat", open("/etc/shadow", "0x0"), "deny", "default"),
		decision("openat", open(filepath.Dir(vm)+"/other/disk.img", "0x2"), "deny", "default"),
		decision("execve", `path="/bin/sh" args=[0x1 0x2 0x3 0x0 0x0 0x0]`, "deny", "no-exec"),
		decision("mmap", `args=[0x0 0x1000 0x5 0x22 0xffffffff 0x0]`, "deny", "default"),
		decision("socket", `family=17 addr="family 17" args=[0x11 0x3 0x300 0x0 0x0 0x0]`, "deny", "default"),
		decision("bind", `family=2 addr="127.0.0.1:4444" args=[0x5 0x1 0x10 0x0 0x0 0x0]`, "deny", "default"),
		decision("connect", `family=1 addr="/run/other.sock" args=[0x5 0x1 0x10 0x0 0x0 0x0]`, "deny", "default"),
		decision("ioctl", `fd0="/dev/sda" args=[0x5 0x1261 0x0 0x0 0x0 0x0]`, "deny", "default"),
		decision("kill", `args=[0x1 0x9 0x0 0x0 0x0 0x0]`, "deny", "default"),
	)
	r, err := Read(in)
	if err != nil {
		t.Fatal(err)
	}
	if r.Profile != "builtin:qemu" || r.Denials != 12 {
		t.Errorf("profile %q, %d denials", r.Profile, r.Denials)
	}
	if len(r.VMDirs) != 1 || r.VMDirs[0] != vm {
		t.Errorf("VM directories %q, want [%s]", r.VMDirs, vm)
	}
	if len(r.Rules) != 2 || r.Rules[0].Access != "O_RDONLY" || r.Rules[0].Count != 2 || r.Rules[1].Access != "O_RDWR" {
		for _, c := range r.Rules {
			t.Logf("rule: %+v", *c)
		}
		t.Fatalf("want two rules for the extent (read-only seen twice, read-write)")
	}
	why := map[string]string{}
	for _, c := range r.Decide {
		why[c.Syscall+" "+strings.ReplaceAll(c.Path, vm, "VM")+c.Addr] = c.Why
	}
	for k, want := range map[string]string{
		"openat /etc/shadow":      "outside the VM's directories",
		"execve /bin/sh":          `the profile's own rule "no-exec"`,
		"mmap ":                   "executable",
		"socket family 17":        "family 17",
		"bind 127.0.0.1:4444":     "a server on the host's network",
		"connect /run/other.sock": "outside the VM's directories",
		"ioctl ":                  "ioctl 0x1261",
		"kill ":                   "acts on a process",
	} {
		if !strings.Contains(why[k], want) {
			t.Errorf("%s: left to the operator because %q, want %q", k, why[k], want)
		}
	}
	var out bytes.Buffer
	if err := WriteOverlay(&out, r, "qemu", "site", []string{"run.jsonl"}); err != nil {
		t.Fatal(err)
	}
	p, err := profiles.Parse("learned.toml", out.Bytes())
	if err != nil {
		t.Fatalf("the overlay does not parse: %v\n%s", err, out.String())
	}
	if p.Extends != "builtin:qemu" || len(p.Rules) < 2 || p.Rules[len(p.Rules)-1].Name != "site-2" {
		t.Errorf("overlay: extends %q, last rule %q", p.Extends, p.Rules[len(p.Rules)-1].Name)
	}
	if strings.Count(out.String(), "\n[[rule]]") != 2 || !strings.Contains(out.String(), "# Seen 2 times (thread qemu-system-x86): opens "+extent+" for reading.") {
		t.Errorf("overlay text:\n%s", out.String())
	}
}

func TestEscapeGlob(t *testing.T) {
	if got := escapeGlob(`/srv/vm[1]/a*b?\c`); got != `/srv/vm\[1\]/a\*b\?\\c` {
		t.Errorf("escapeGlob = %q", got)
	}
}
