package guest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// KernelMetapackage is the package whose dependency names the kernel the
// Linux guest boots; apt resolves it when the guest is built.
const KernelMetapackage = "linux-image-amd64"

// BusyboxPackage provides /bin/busybox for the initramfs.
const BusyboxPackage = "busybox-static"

// ErrNeedRoot is wrapped by errors that could be fixed by running as
// root (installing packages, refreshing apt's lists).
var ErrNeedRoot = errors.New("needs root")

// aptUpdateOnce makes sure "apt-get update" runs at most once per process.
var aptUpdateOnce struct {
	sync.Mutex
	done bool
	err  error
}

func runCmd(dir, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 600 {
			msg = "…" + msg[len(msg)-600:]
		}
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return out, nil
}

// aptUpdate runs "apt-get update" once per process, as root only.
func aptUpdate() error {
	aptUpdateOnce.Lock()
	defer aptUpdateOnce.Unlock()
	if aptUpdateOnce.done {
		return aptUpdateOnce.err
	}
	aptUpdateOnce.done = true
	if os.Geteuid() != 0 {
		aptUpdateOnce.err = fmt.Errorf("apt-get update: %w (apt's package lists look empty)", ErrNeedRoot)
		return aptUpdateOnce.err
	}
	_, aptUpdateOnce.err = runCmd("", "apt-get", "update")
	return aptUpdateOnce.err
}

// withAptLists runs f; if it fails, it refreshes apt's lists (once, as
// root) and runs f again. A fresh container has no lists, so apt-cache
// knows no packages until "apt-get update".
func withAptLists[T any](f func() (T, error)) (T, error) {
	v, err := f()
	if err == nil {
		return v, nil
	}
	if uerr := aptUpdate(); uerr != nil {
		var zero T
		return zero, errors.Join(err, uerr)
	}
	return f()
}

var dependsRE = regexp.MustCompile(`(?m)^\s*Depends:\s*(linux-image-[0-9][^\s<>]*)`)

// resolveKernelPackage asks apt which kernel package KernelMetapackage
// depends on now (e.g. linux-image-6.1.0-56-amd64).
func resolveKernelPackage() (string, error) {
	return withAptLists(func() (string, error) {
		out, err := runCmd("", "apt-cache", "depends", KernelMetapackage)
		if err != nil {
			return "", err
		}
		m := dependsRE.FindSubmatch(out)
		if m == nil {
			return "", fmt.Errorf("apt-cache depends %s: no linux-image-* dependency in %q", KernelMetapackage, out)
		}
		return string(m[1]), nil
	})
}

var candidateRE = regexp.MustCompile(`(?m)^\s*Candidate:\s*(\S+)`)

// candidateVersion is the version apt would download for pkg.
func candidateVersion(pkg string) (string, error) {
	return withAptLists(func() (string, error) {
		out, err := runCmd("", "apt-cache", "policy", pkg)
		if err != nil {
			return "", err
		}
		m := candidateRE.FindSubmatch(out)
		if m == nil || string(m[1]) == "(none)" {
			return "", fmt.Errorf("apt-cache policy %s: no candidate version", pkg)
		}
		return string(m[1]), nil
	})
}

// aptDownload fetches pkg=version into dir (no root needed) unless the
// .deb is already there, and returns its path.
func aptDownload(dir, pkg, version string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create download dir: %w", err)
	}
	find := func() string {
		// apt escapes ':' in epochs as %3a.
		v := strings.ReplaceAll(version, ":", "%3a")
		m, _ := filepath.Glob(filepath.Join(dir, pkg+"_"+v+"_*.deb"))
		if len(m) == 1 {
			return m[0]
		}
		return ""
	}
	if p := find(); p != "" {
		return p, nil
	}
	// As root apt drops privileges to _apt for downloads; let it write.
	if os.Geteuid() == 0 {
		if err := os.Chmod(dir, 0o777); err != nil {
			return "", fmt.Errorf("chmod download dir: %w", err)
		}
	}
	_, err := withAptLists(func() (struct{}, error) {
		_, err := runCmd(dir, "apt-get", "download", pkg+"="+version)
		return struct{}{}, err
	})
	if err != nil {
		return "", err
	}
	p := find()
	if p == "" {
		return "", fmt.Errorf("apt-get download %s=%s: no .deb appeared in %s", pkg, version, dir)
	}
	return p, nil
}

// HostTools maps commands the integration tests and demos run to the
// Debian packages that provide them.
var HostTools = map[string]string{
	"qemu-system-x86_64": "qemu-system-x86",
	"qemu-img":           "qemu-utils",
	"strace":             "strace",
	"xz":                 "xz-utils",
}

// EnsureTools makes sure the named commands (keys of HostTools) are in
// PATH. Missing ones are installed with "apt-get install -y" when
// running as root (after one "apt-get update"); otherwise the error
// names the packages to install and wraps ErrNeedRoot.
func EnsureTools(cmds ...string) error {
	var missing []string
	for _, c := range cmds {
		pkg, ok := HostTools[c]
		if !ok {
			return fmt.Errorf("ensure tool %s: no known package provides it", c)
		}
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("missing commands: install %s (apt-get install -y %s): %w",
			strings.Join(missing, ", "), strings.Join(missing, " "), ErrNeedRoot)
	}
	if err := aptUpdate(); err != nil {
		return err
	}
	args := append([]string{"install", "-y", "--no-install-recommends"}, missing...)
	if _, err := runCmd("", "apt-get", args...); err != nil {
		return err
	}
	return nil
}
