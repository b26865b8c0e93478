package config

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
)

// DefaultPath is the system configuration file.
const DefaultPath = "/etc/kfv/kfv.toml"

// PathEnv names the environment variable that points kfv at another
// configuration file (tests, trying a setting on one domain). The system
// file can forbid it with environment_overrides = false.
const PathEnv = "KFV_CONFIG"

// DefaultEvents is where event streams go when the file says nothing:
// one file per VM, named after it.
const DefaultEvents = "/var/log/kfv"

// VMPlaceholder in Events is replaced by the VM's name.
const VMPlaceholder = "{vm}"

// Config is the emulator's configuration. The zero value is not valid;
// use Default or Load.
type Config struct {
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
	// EnvironmentOverrides lets KFV_CONFIG choose another file. Only
	// the system file's setting counts.
	EnvironmentOverrides *bool `toml:"environment_overrides"`

	// Source is the file the configuration came from, or "defaults".
	Source string `toml:"-"`
}

// Default is the configuration when no file exists.
func Default() *Config {
	return &Config{Profile: "qemu", Mode: "enforce", Events: DefaultEvents, Source: "defaults"}
}

// Load reads a configuration file over the defaults. Unknown keys are
// errors: a misspelt "mode" must not silently leave kfv in another mode.
func Load(path string) (*Config, error) {
	c := Default()
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

func (c *Config) validate() error {
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
	if c.QEMU != "" && !filepath.IsAbs(c.QEMU) {
		return fmt.Errorf("qemu %q: want an absolute path", c.QEMU)
	}
	return nil
}

// Find loads the configuration kfv should use given its environment
// lookup function: the file named by KFV_CONFIG when the system file
// allows it, else the system file, else the defaults.
func Find(getenv func(string) string) (*Config, error) {
	return find(DefaultPath, getenv)
}

func find(sysPath string, getenv func(string) string) (*Config, error) {
	sys, err := Load(sysPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		sys = nil
	case err != nil:
		return nil, err
	}
	if p := getenv(PathEnv); p != "" {
		if sys != nil && sys.EnvironmentOverrides != nil && !*sys.EnvironmentOverrides {
			return nil, fmt.Errorf("%s=%s: %s sets environment_overrides = false", PathEnv, p, sysPath)
		}
		return Load(p)
	}
	if sys == nil {
		return Default(), nil
	}
	return sys, nil
}

// EventsPath is the event stream file for a VM: {vm} in the pattern
// replaced, or DIR/VM.jsonl for a directory.
func (c *Config) EventsPath(vm string) string {
	name := SafeName(vm)
	if strings.Contains(c.Events, VMPlaceholder) {
		return strings.ReplaceAll(c.Events, VMPlaceholder, name)
	}
	return filepath.Join(c.Events, name+".jsonl")
}

// SafeName makes a VM name usable as one path element: anything but
// letters, digits, '-', '_' and '.' becomes '_', and a leading '.' too,
// so a name can neither climb out of the directory nor hide.
func SafeName(vm string) string {
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
