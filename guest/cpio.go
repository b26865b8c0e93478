package guest

import (
	"fmt"
	"io"
)

// cpioWriter writes the "newc" cpio format the kernel unpacks as an
// initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
// Written here rather than by cpio(1) so that device nodes need no root
// and the archive is byte-for-byte reproducible: every entry is owned by
// root with mtime 0 and inode numbers count up from 1.
type cpioWriter struct {
	w   io.Writer
	ino uint32
	off int64
	err error
}

const (
	cpioModeDir  = 0o040000
	cpioModeFile = 0o100000
	cpioModeLink = 0o120000
	cpioModeChr  = 0o020000
)

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w}
}

func (c *cpioWriter) write(p []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(p)
	c.off += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.off % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// entry writes one header, name and body. rdev is major<<8|minor style
// split into the two fields for device nodes.
func (c *cpioWriter) entry(name string, mode uint32, body []byte, rmajor, rminor uint32) {
	c.ino++
	nlink := uint32(1)
	if mode&0o170000 == cpioModeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, len(body), 0, 0, rmajor, rminor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name))
	c.write([]byte{0})
	c.pad()
	c.write(body)
	c.pad()
}

// Dir adds a directory.
func (c *cpioWriter) Dir(name string, perm uint32) { c.entry(name, cpioModeDir|perm, nil, 0, 0) }

// File adds a regular file.
func (c *cpioWriter) File(name string, perm uint32, body []byte) {
	c.entry(name, cpioModeFile|perm, body, 0, 0)
}

// Symlink adds a symbolic link to target.
func (c *cpioWriter) Symlink(name, target string) {
	c.entry(name, cpioModeLink|0o777, []byte(target), 0, 0)
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm, major, minor uint32) {
	c.entry(name, cpioModeChr|perm, nil, major, minor)
}

// Close writes the trailer and reports the first write error.
func (c *cpioWriter) Close() error {
	c.ino = 0
	c.entry("TRAILER!!!", 0, nil, 0, 0)
	if c.err != nil {
		return fmt.Errorf("write cpio: %w", c.err)
	}
	return nil
}
