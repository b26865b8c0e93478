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
	// EnvironmentOverrides lets KFV_CONFIG choose another file. Only
	// the system file's setting counts.
	EnvironmentOverrides *bool `toml:"environment_overrides"`

	// Source is the file the configuration came from, or "defaults".
	Source string `toml:"-"`
}

// defaultConfig is the configuration when no file exists.
func defaultConfig() *config {
	return &config{Profile: "qemu", Mode: "enforce", Events: defaultEvents, Source: "defaults"}
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
	if c.Events == "" || !filepath.IsAbs(c.Events) {
		return fmt.Errorf("events %q: want an absolute directory or file pattern", c.Events)
	}
	if c.Landlock != "" {
		if _, err := supervisor.ParseLandlockMode(c.Landlock); err != nil {
			return err
		}
	}
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
