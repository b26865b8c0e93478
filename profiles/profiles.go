package profiles

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
)

//go:embed builtin/*.toml
var builtinFS embed.FS

// Load reads and validates the profile at path. A profile with problems
// returns an ErrorList; an unreadable file returns the *os.PathError.
func Load(path string) (*Profile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	return Parse(path, data)
}

// Builtin returns the embedded profile with the given name ("qemu").
func Builtin(name string) (*Profile, error) {
	data, err := BuiltinSource(name)
	if err != nil {
		return nil, err
	}
	p, err := Parse("builtin:"+name, data)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// BuiltinSource returns the TOML of the embedded profile with the given
// name, for showing or copying it.
func BuiltinSource(name string) ([]byte, error) {
	if strings.ContainsAny(name, "/\\") {
		return nil, fmt.Errorf("no builtin profile %q (builtins: %s)", name, strings.Join(BuiltinNames(), ", "))
	}
	data, err := builtinFS.ReadFile("builtin/" + name + ".toml")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no builtin profile %q (builtins: %s)", name, strings.Join(BuiltinNames(), ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("read builtin profile %q: %w", name, err)
	}
	return data, nil
}

// BuiltinNames returns the names of the embedded profiles, sorted.
func BuiltinNames() []string {
	entries, err := builtinFS.ReadDir("builtin")
	if err != nil { // the directory is embedded; it cannot be missing
		return nil
	}
	var out []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".toml"); ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Resolve loads a builtin profile when nameOrPath contains no "/" and
// does not end in ".toml", and the file at nameOrPath otherwise.
func Resolve(nameOrPath string) (*Profile, error) {
	if !strings.Contains(nameOrPath, "/") && path.Ext(nameOrPath) != ".toml" {
		return Builtin(nameOrPath)
	}
	return Load(nameOrPath)
}
