package resources

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// HostFS returns the host's file system as an fs.FS rooted at "/", the
// view FromArgs expects.
func HostFS() fs.FS { return os.DirFS("/") }

// fsName turns an absolute path into a name for an fs.FS rooted at "/".
func fsName(abs string) string {
	n := strings.TrimPrefix(filepath.Clean(abs), "/")
	if n == "" {
		return "."
	}
	return n
}

// absPath resolves p against cwd and cleans it.
func absPath(p, cwd string) string {
	if p == "" {
		return ""
	}
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(cwd, p)
}

// escapeGlob quotes glob metacharacters, so that a path made part of a
// Pattern matches only itself there.
func escapeGlob(p string) string {
	return strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `{`, `\{`).Replace(p)
}

// readAt reads len(b) bytes at off from the named file, through ReadAt
// when the file offers it.
func readAt(f fs.File, b []byte, off int64) (int, error) {
	if ra, ok := f.(io.ReaderAt); ok {
		n, err := ra.ReadAt(b, off)
		if errors.Is(err, io.EOF) && n == len(b) {
			err = nil
		}
		return n, err
	}
	if s, ok := f.(io.Seeker); ok {
		if _, err := s.Seek(off, io.SeekStart); err != nil {
			return 0, fmt.Errorf("seek: %w", err)
		}
		return io.ReadFull(f, b)
	}
	return 0, errors.New("file offers neither ReadAt nor Seek")
}

// open opens the absolute path abs in fsys. Its error names abs, not the
// name relative to fsys's root that fsys would put in it.
func open(fsys fs.FS, abs string) (fs.File, error) {
	f, err := fsys.Open(fsName(abs))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("open %s: %w", abs, err)
	}
	return f, nil
}

// readSmall reads at most limit bytes of a whole file, and fails when the
// file is larger.
func readSmall(fsys fs.FS, abs string, limit int64) ([]byte, error) {
	f, err := open(fsys, abs)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", abs, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("read %s: larger than %d bytes", abs, limit)
	}
	return b, nil
}

// exists reports whether abs can be stat'ed in fsys.
func exists(fsys fs.FS, abs string) bool {
	if fsys == nil {
		return false
	}
	_, err := fs.Stat(fsys, fsName(abs))
	return err == nil
}

// isDir reports whether abs is a directory in fsys.
func isDir(fsys fs.FS, abs string) bool {
	if fsys == nil {
		return false
	}
	fi, err := fs.Stat(fsys, fsName(abs))
	return err == nil && fi.IsDir()
}
