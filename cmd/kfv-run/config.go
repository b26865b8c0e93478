package main

// This file reads kfv's system configuration, /etc/kfv/kfv.toml: the
// settings kfv uses when it runs as a libvirt domain's emulator
// (kfv-qemu-system-x86_64), where it takes no flags (docs/libvirt.md),
// and run_as, the user of standalone QEMUs when kfv-run is root.

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"kfv/supervisor"
)

// configPath is the system configuration file.
const configPath = "/etc/kfv/kfv.toml"

// configPathEnv names the environment variable that points kfv at another
// configuration file (tests, trying a setting on one domain). The system
// file can forbid it with environment_overrides = false.
const configPathEnv = "KFV_CONFIG"

// defaultEvents is where event streams go when the file says nothing:
// one file per VM, named after it.
const defaultEvents = "/var/log/kfv"

// vmPlaceholder in Events is replaced by the VM's name.
const vmPlaceholder = "{vm}"

// config is the emulator's configuration. The zero value is not valid;
// use defaultConfig or loadConfig.
type config struct {
	// QEMU is the real QEMU binary; empty means the first
	// qemu-system-x86_64 in PATH that is not kfv itself.
	QEMU string `toml:"qemu"`
	// Profile is a built-in profile name or a profile file.
	Profile string `toml:"profile"`
	// ProfileOverlay is an overlay file stacked on the profile ("" for
	// none).
	ProfileOverlay string `toml:"profile_overlay"`
	// EventsMaxSize rotates a VM's event file past this size ("100MiB";
	// "0" never), keeping EventsKeep rotated files.
	EventsMaxSize string `toml:"events_max_size"`
	EventsKeep    int    `toml:"events_keep"`
	eventsMaxSize int64
	// MetricsDir is where each VM's Prometheus metrics go, as
	// kfv-VM.prom for node_exporter's textfile collector ("" for none;
	// by default /var/lib/kfv/metrics when it exists).
	MetricsDir string `toml:"metrics_dir"`
	// Mode is "enforce" or "audit".
	Mode string `toml:"mode"`
	// Events is a directory (events go to DIR/VM.jsonl) or a file pattern
	// containing {vm}.
	Events string `toml:"events"`
	// Landlock is QEMU's Landlock wall: "required", "best-effort" or
	// "off"; empty leaves it to the profile (else best-effort).
	Landlock string `toml:"landlock"`
	// RunAs is the user QEMU runs as when kfv-run runs as root in the
	// standalone model (kfv-run -- QEMU ...; --run-as wins over it);
	// empty is kfv-qemu. The emulator model ignores it: libvirt chooses
	// QEMU's user.
	RunAs string `toml:"run_as"`
	// Cgroup is QEMU's cgroup of its own in the standalone model:
	// "best-effort" (the default), "required" or "off"; CgroupPidsMax
	// and CgroupMemoryMax its pids.max ("4096" by default, or "max")
	// and memory.max (a size, or "max", the default).
	Cgroup          string `toml:"cgroup"`
	CgroupPidsMax   string `toml:"cgroup_pids_max"`
	CgroupMemoryMax string `toml:"cgroup_memory_max"`
	cgroup          *supervisor.Cgroup
	// MemwatchCache is the directory of memwatch's baseline cache,
	// shared by the VMs of the host: "" for the default
	// (supervisor.DefaultMemwatchCache), "off" for none, or an
	// absolute directory.
	MemwatchCache string `toml:"memwatch_cache"`
	// EnvironmentOverrides lets KFV_CONFIG choose another file. Only
	// the system file's setting counts.
	EnvironmentOverrides *bool `toml:"environment_overrides"`

	// Source is the file the configuration came from, or "defaults".
	Source string `toml:"-"`
}

// defaultConfig is the configuration when no file exists.
func defaultConfig() *config {
	return &config{Profile: "qemu", Mode: "enforce", Events: defaultEvents, EventsMaxSize: defaultEventsMaxSize, EventsKeep: defaultEventsKeep, eventsMaxSize: mustSize(defaultEventsMaxSize), MetricsDir: defaultMetrics(), Source: "defaults"}
}

// loadConfig reads a configuration file over the defaults. Unknown keys are
// errors: a misspelt "mode" must not silently leave kfv in another mode.
func loadConfig(path string) (*config, error) {
	c := defaultConfig()
	md, err := toml.DecodeFile(path, c)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		keys := make([]string, len(u))
		for i, k := range u {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("%s: unknown setting %s", path, strings.Join(keys, ", "))
	}
	c.Source = path
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func (c *config) validate() error {
	switch c.Mode {
	case "enforce", "audit":
	default:
		return fmt.Errorf("mode %q: want enforce or audit", c.Mode)
	}
	if c.Profile == "" {
		return errors.New("profile is empty: name a built-in profile (qemu) or a file")
	}
	n, err := parseSize(c.EventsMaxSize)
	if err != nil {
		return fmt.Errorf("events_max_size: %w", err)
	}
	c.eventsMaxSize = n
	if c.EventsKeep < 1 {
		return fmt.Errorf("events_keep %d: want at least 1", c.EventsKeep)
	}
	if c.MetricsDir != "" && !filepath.IsAbs(c.MetricsDir) {
		return fmt.Errorf("metrics_dir %q: want an absolute directory, or \"\" for none", c.MetricsDir)
	}
	if c.ProfileOverlay != "" && !filepath.IsAbs(c.ProfileOverlay) {
		return fmt.Errorf("profile_overlay %q: want an absolute path", c.ProfileOverlay)
	}
	if c.Events == "" || !filepath.IsAbs(c.Events) {
		return fmt.Errorf("events %q: want an absolute directory or file pattern", c.Events)
	}
	if c.Landlock != "" {
		if _, err := supervisor.ParseLandlockMode(c.Landlock); err != nil {
			return err
		}
	}
	if c.MemwatchCache != "" && c.MemwatchCache != "off" && !filepath.IsAbs(c.MemwatchCache) {
		return fmt.Errorf("memwatch_cache %q: want an absolute directory, \"off\" for none, or \"\" for the default", c.MemwatchCache)
	}
	cg, err := parseCgroup(c.Cgroup, c.CgroupPidsMax, c.CgroupMemoryMax)
	if err != nil {
		return err
	}
	c.cgroup = cg
	if c.QEMU != "" && !filepath.IsAbs(c.QEMU) {
		return fmt.Errorf("qemu %q: want an absolute path", c.QEMU)
	}
	return nil
}

// findConfig loads the configuration kfv should use given its environment
// lookup function: the file named by KFV_CONFIG when the system file
// allows it, else the system file, else the defaults.
func findConfig(getenv func(string) string) (*config, error) {
	return findConfigIn(configPath, getenv)
}

// findConfigIn is findConfig with the system file at sysPath.
func findConfigIn(sysPath string, getenv func(string) string) (*config, error) {
	sys, err := loadConfig(sysPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		sys = nil
	case err != nil:
		return nil, err
	}
	if p := getenv(configPathEnv); p != "" {
		if sys != nil && sys.EnvironmentOverrides != nil && !*sys.EnvironmentOverrides {
			return nil, fmt.Errorf("%s=%s: %s sets environment_overrides = false", configPathEnv, p, sysPath)
		}
		return loadConfig(p)
	}
	if sys == nil {
		return defaultConfig(), nil
	}
	return sys, nil
}

// eventsPath is the event stream file for a VM: {vm} in the pattern
// replaced, or DIR/VM.jsonl for a directory.
func (c *config) eventsPath(vm string) string {
	name := safeName(vm)
	if strings.Contains(c.Events, vmPlaceholder) {
		return strings.ReplaceAll(c.Events, vmPlaceholder, name)
	}
	return filepath.Join(c.Events, name+".jsonl")
}

// safeName makes a VM name usable as one path element: anything but
// letters, digits, '-', '_' and '.' becomes '_', and a leading '.' too,
// so a name can neither climb out of the directory nor hide.
func safeName(vm string) string {
	if vm == "" {
		return "qemu"
	}
	b := []byte(vm)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' && i > 0
		if !ok {
			b[i] = '_'
		}
	}
	return string(b)
}

// The event files' rotation by default: a flood is folded to about
// 1 MiB a second (event.DefaultOptions), so a file reaches this in
// minutes at worst, and a VM keeps at most 600 MiB of events.
const (
	defaultEventsMaxSize = "100MiB"
	defaultEventsKeep    = 5
)

// parseSize reads a size: bytes, or a number with K, KiB, M, MiB, G or
// GiB (all powers of 1024). "0" is 0.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}}
	mult := int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want bytes, or a number with KiB, MiB or GiB", s)
	}
	return n * mult, nil
}

// parseCgroup checks the cgroup settings: a mode, pids.max (a number
// of tasks, or "max") and memory.max (a size, or "max"); "" for the
// defaults.
func parseCgroup(mode, pids, mem string) (*supervisor.Cgroup, error) {
	m, err := supervisor.ParseCgroupMode(mode)
	if err != nil {
		return nil, err
	}
	cg := &supervisor.Cgroup{Mode: m}
	switch pids {
	case "":
	case "max":
		cg.PidsMax = -1
	default:
		n, err := strconv.ParseInt(pids, 10, 64)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("cgroup_pids_max %q: want a number of tasks of at least 1, or \"max\"", pids)
		}
		cg.PidsMax = n
	}
	switch mem {
	case "", "max":
	default:
		n, err := parseSize(mem)
		if err != nil || n < 1<<20 {
			return nil, fmt.Errorf("cgroup_memory_max %q: want a size of at least 1MiB (bytes, or a number with KiB, MiB or GiB), or \"max\"", mem)
		}
		cg.MemoryMax = n
	}
	return cg, nil
}

func mustSize(s string) int64 {
	n, err := parseSize(s)
	if err != nil {
		panic(err)
	}
	return n
}
