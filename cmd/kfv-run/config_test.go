package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kfv/supervisor"
)

func writeConfig(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, body string
		want       config
		err        string
	}{
		{name: "empty", body: "", want: config{Profile: "qemu", Mode: "enforce", Events: defaultEvents}},
		{name: "all", body: "qemu = \"/usr/bin/qemu-system-x86_64\"\nprofile = \"/etc/kfv/p.toml\"\nmode = \"audit\"\nevents = \"/var/log/kfv/{vm}.events\"\n",
			want: config{QEMU: "/usr/bin/qemu-system-x86_64", Profile: "/etc/kfv/p.toml", Mode: "audit", Events: "/var/log/kfv/{vm}.events"}},
		{name: "unknown key", body: "mdoe = \"audit\"\n", err: "unknown setting mdoe"},
		{name: "bad mode", body: "mode = \"permissive\"\n", err: `mode "permissive"`},
		{name: "relative events", body: "events = \"logs\"\n", err: `events "logs"`},
		{name: "relative qemu", body: "qemu = \"qemu-system-x86_64\"\n", err: "want an absolute path"},
		{name: "empty profile", body: "profile = \"\"\n", err: "profile is empty"},
		{name: "syntax", body: "mode = \n", err: "read "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, dir, tt.name+".toml", tt.body)
			c, err := loadConfig(p)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("loadConfig = %v, want error containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.QEMU != tt.want.QEMU || c.Profile != tt.want.Profile || c.Mode != tt.want.Mode || c.Events != tt.want.Events || c.Source != p {
				t.Errorf("loadConfig = %+v, want %+v from %s", c, tt.want, p)
			}
		})
	}
}

func TestFindConfig(t *testing.T) {
	dir := t.TempDir()
	other := writeConfig(t, dir, "other.toml", "mode = \"audit\"\n")
	locked := writeConfig(t, dir, "locked.toml", "environment_overrides = false\n")
	open := writeConfig(t, dir, "open.toml", "profile = \"/p.toml\"\n")
	missing := filepath.Join(dir, "missing.toml")
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == configPathEnv {
				return v
			}
			return ""
		}
	}
	tests := []struct {
		name, sys, env string
		source, err    string
	}{
		{name: "no files", sys: missing, source: "defaults"},
		{name: "system file", sys: open, source: open},
		{name: "override without system file", sys: missing, env: other, source: other},
		{name: "override allowed", sys: open, env: other, source: other},
		{name: "override forbidden", sys: locked, env: other, err: "environment_overrides = false"},
		{name: "override names a missing file", sys: missing, env: missing, err: "read "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := findConfigIn(tt.sys, env(tt.env))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("findConfigIn = %v, want error containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Source != tt.source {
				t.Errorf("source %q, want %q", c.Source, tt.source)
			}
		})
	}
}

func TestEventsPath(t *testing.T) {
	tests := []struct{ events, vm, want string }{
		{"/var/log/kfv", "web1", "/var/log/kfv/web1.jsonl"},
		{"/var/log/kfv/{vm}/events.jsonl", "web1", "/var/log/kfv/web1/events.jsonl"},
		{"/var/log/kfv", "../../etc/passwd", "/var/log/kfv/_._.._etc_passwd.jsonl"},
		{"/var/log/kfv", ".hidden", "/var/log/kfv/_hidden.jsonl"},
		{"/var/log/kfv", "", "/var/log/kfv/qemu.jsonl"},
		{"/var/log/kfv", "a b/c", "/var/log/kfv/a_b_c.jsonl"},
	}
	for _, tt := range tests {
		c := &config{Events: tt.events}
		if got := c.eventsPath(tt.vm); got != tt.want {
			t.Errorf("eventsPath(%q) with %q = %q, want %q", tt.vm, tt.events, got, tt.want)
		}
	}
}

func TestConfigCgroup(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, body string
		want       supervisor.Cgroup
		err        string
	}{
		{name: "defaults", body: "", want: supervisor.Cgroup{Mode: supervisor.CgroupBestEffort}},
		{name: "all", body: "cgroup = \"required\"\ncgroup_pids_max = \"512\"\ncgroup_memory_max = \"6GiB\"\n", want: supervisor.Cgroup{Mode: supervisor.CgroupRequired, PidsMax: 512, MemoryMax: 6 << 30}},
		{name: "max", body: "cgroup_pids_max = \"max\"\ncgroup_memory_max = \"max\"\n", want: supervisor.Cgroup{Mode: supervisor.CgroupBestEffort, PidsMax: -1}},
		{name: "off", body: "cgroup = \"off\"\n", want: supervisor.Cgroup{Mode: supervisor.CgroupOff}},
		{name: "bad mode", body: "cgroup = \"yes\"\n", err: `cgroup "yes": want required, best-effort or off`},
		{name: "bad pids", body: "cgroup_pids_max = \"0\"\n", err: `cgroup_pids_max "0"`},
		{name: "bad memory", body: "cgroup_memory_max = \"lots\"\n", err: `cgroup_memory_max "lots"`},
		{name: "tiny memory", body: "cgroup_memory_max = \"4KiB\"\n", err: "at least 1MiB"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, dir, tt.name+".toml", tt.body)
			c, err := loadConfig(p)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), p) {
					t.Fatalf("loadConfig = %v, want an error naming %s and containing %q", err, p, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *c.cgroup != tt.want {
				t.Errorf("cgroup setting %+v, want %+v", *c.cgroup, tt.want)
			}
		})
	}
}

func TestConfigMemwatchCache(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, body, want, err string
	}{
		{name: "default", body: "", want: supervisor.MemwatchCacheDir("")},
		{name: "off", body: "memwatch_cache = \"off\"\n", want: ""},
		{name: "dir", body: "memwatch_cache = \"/srv/kfv/cache\"\n", want: "/srv/kfv/cache"},
		{name: "relative", body: "memwatch_cache = \"cache\"\n", err: `memwatch_cache "cache": want an absolute directory`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := writeConfig(t, dir, tt.name+".toml", tt.body)
			c, err := loadConfig(p)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), p) {
					t.Fatalf("loadConfig = %v, want an error naming %s and containing %q", err, p, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := supervisor.MemwatchCacheDir(c.MemwatchCache); got != tt.want {
				t.Errorf("memwatch cache %q, want %q", got, tt.want)
			}
		})
	}
	if d := supervisor.MemwatchCacheDir(""); !strings.HasSuffix(d, "/memwatch-cache") || !filepath.IsAbs(d) {
		t.Errorf("default memwatch cache %q", d)
	}
}
