package guest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
)

// QEMUEnv is the environment variable that selects the QEMU the tests,
// the demo and the benchmarks run: the path of a qemu-system-x86_64. When
// it is unset or empty, the one in PATH runs.
const QEMUEnv = "KFV_QEMU"

// QEMUBinary returns the absolute path, links resolved, of the
// qemu-system-x86_64 to run: $KFV_QEMU, made absolute against the working
// directory, or the first qemu-system-x86_64 in PATH. The error says which
// was looked for and why it is not usable.
func QEMUBinary() (string, error) {
	if p := os.Getenv(QEMUEnv); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("%s=%s: %w", QEMUEnv, p, err)
		}
		st, err := os.Stat(abs)
		if err != nil {
			return "", fmt.Errorf("%s=%s: %w", QEMUEnv, p, err)
		}
		if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			return "", fmt.Errorf("%s=%s: not an executable file", QEMUEnv, p)
		}
		return realPath(abs)
	}
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", fmt.Errorf("qemu-system-x86_64 not in PATH (install qemu-system-x86, or name one with %s): %w", QEMUEnv, err)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	return realPath(abs)
}

// realPath resolves links: the path returned is the one the kernel shows
// as the QEMU process's /proc/PID/exe.
func realPath(p string) (string, error) {
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("qemu-system-x86_64 %s: %w", p, err)
	}
	return r, nil
}

// QEMUVersion is what a QEMU binary says of itself with -version.
type QEMUVersion struct {
	Major, Minor, Micro int
	Line                string // the first line, "QEMU emulator version 7.2.22 (Debian ...)"
}

func (v QEMUVersion) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro) }

var versionRE = regexp.MustCompile(`(?m)^QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?[^\n]*`)

// ParseQEMUVersion reads the output of qemu-system-x86_64 -version.
func ParseQEMUVersion(out []byte) (QEMUVersion, error) {
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return QEMUVersion{}, fmt.Errorf("no %q line in %q", "QEMU emulator version X.Y", out)
	}
	v := QEMUVersion{Line: string(m[0])}
	v.Major, _ = strconv.Atoi(string(m[1]))
	v.Minor, _ = strconv.Atoi(string(m[2]))
	if len(m[3]) > 0 {
		v.Micro, _ = strconv.Atoi(string(m[3]))
	}
	return v, nil
}

var versions sync.Map // binary path -> QEMUVersion

// QEMUVersionOf runs bin -version (once per binary and process) and
// parses its answer.
func QEMUVersionOf(bin string) (QEMUVersion, error) {
	if v, ok := versions.Load(bin); ok {
		return v.(QEMUVersion), nil
	}
	out, err := exec.Command(bin, "-version").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return QEMUVersion{}, fmt.Errorf("%s -version: %w: %s", bin, err, ee.Stderr)
		}
		return QEMUVersion{}, fmt.Errorf("%s -version: %w", bin, err)
	}
	v, err := ParseQEMUVersion(out)
	if err != nil {
		return QEMUVersion{}, fmt.Errorf("%s -version: %w", bin, err)
	}
	versions.Store(bin, v)
	return v, nil
}
