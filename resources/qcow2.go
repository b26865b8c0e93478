package resources

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
)

// qcow2Magic starts every qcow2 image: "QFI\xfb".
var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// Header extension types (QEMU's docs/interop/qcow2.txt).
const (
	extEnd           = 0x00000000
	extBackingFormat = 0xe2792aca
	extDataFile      = 0x44415441
)

// QEMU's limits, which an image must respect to be opened at all.
const (
	maxBackingName  = 1023 // backing_file_size
	minClusterBits  = 9
	maxClusterBits  = 21
	maxHeaderExts   = 256 // more than QEMU defines; a bound for hostile headers
	qcow2HeaderV2   = 72
	qcow2HeaderV3   = 104
	incompatDataBit = 1 << 2 // external data file
)

// QCOW2Header is what a qcow2 header says about other files.
type QCOW2Header struct {
	Version uint32
	// Backing is the backing file name as stored ("" for none); it is
	// relative to the image's directory unless absolute or a protocol
	// ("json:{...}", "nbd://...").
	Backing string
	// BackingFormat is the format from the header extension ("" when the
	// image does not say, and QEMU probes).
	BackingFormat string
	// DataFile is the external data file's name (version 3 images with
	// the external data file feature); like Backing, relative to the
	// image's directory.
	DataFile string
}

// errNotQCOW2 is returned for files without the qcow2 magic.
var errNotQCOW2 = errors.New("not a qcow2 image")

// ParseQCOW2Header reads a qcow2 header, its header extensions and its
// backing file name from r. It checks what QEMU checks before it would
// follow a backing name, and never reads more than the header's cluster.
func ParseQCOW2Header(r io.ReaderAt) (*QCOW2Header, error) {
	var fixed [qcow2HeaderV3]byte
	n, err := r.ReadAt(fixed[:], 0)
	if n < qcow2HeaderV2 {
		if err == nil || errors.Is(err, io.EOF) {
			if n >= 4 && !bytes.Equal(fixed[:4], qcow2Magic) {
				return nil, errNotQCOW2
			}
			return nil, fmt.Errorf("qcow2 header: short read (%d bytes)", n)
		}
		return nil, fmt.Errorf("qcow2 header: %w", err)
	}
	if !bytes.Equal(fixed[:4], qcow2Magic) {
		return nil, errNotQCOW2
	}
	be := binary.BigEndian
	h := &QCOW2Header{Version: be.Uint32(fixed[4:])}
	if h.Version != 2 && h.Version != 3 {
		return nil, fmt.Errorf("qcow2 header: unsupported version %d", h.Version)
	}
	backingOff := be.Uint64(fixed[8:])
	backingLen := be.Uint32(fixed[16:])
	clusterBits := be.Uint32(fixed[20:])
	if clusterBits < minClusterBits || clusterBits > maxClusterBits {
		return nil, fmt.Errorf("qcow2 header: cluster_bits %d out of range", clusterBits)
	}
	clusterSize := uint64(1) << clusterBits

	headerLen := uint64(qcow2HeaderV2)
	var incompat uint64
	if h.Version == 3 {
		if n < qcow2HeaderV3 {
			return nil, fmt.Errorf("qcow2 header: short v3 header (%d bytes)", n)
		}
		incompat = be.Uint64(fixed[72:])
		headerLen = uint64(be.Uint32(fixed[100:]))
		if headerLen < qcow2HeaderV3 || headerLen%8 != 0 || headerLen > clusterSize {
			return nil, fmt.Errorf("qcow2 header: header_length %d invalid", headerLen)
		}
	}

	// Header extensions follow the header, within the first cluster.
	end := clusterSize
	if backingOff != 0 && backingOff < end {
		end = backingOff
	}
	off := headerLen
	for i := 0; ; i++ {
		if i == maxHeaderExts {
			return nil, errors.New("qcow2 header: too many header extensions")
		}
		if off+8 > end {
			break // QEMU stops when no extension header fits
		}
		var eh [8]byte
		if _, err := readFull(r, eh[:], int64(off)); err != nil {
			return nil, fmt.Errorf("qcow2 header extension at %d: %w", off, err)
		}
		typ, length := be.Uint32(eh[:]), uint64(be.Uint32(eh[4:]))
		off += 8
		if typ == extEnd {
			break
		}
		if length > end-off {
			return nil, fmt.Errorf("qcow2 header extension %#x at %d: length %d beyond the header", typ, off-8, length)
		}
		switch typ {
		case extBackingFormat, extDataFile:
			data := make([]byte, length)
			if _, err := readFull(r, data, int64(off)); err != nil {
				return nil, fmt.Errorf("qcow2 header extension %#x: %w", typ, err)
			}
			if i := bytes.IndexByte(data, 0); i >= 0 {
				data = data[:i]
			}
			if typ == extBackingFormat {
				h.BackingFormat = string(data)
			} else if incompat&incompatDataBit != 0 {
				h.DataFile = string(data)
			}
		}
		off += (length + 7) &^ 7
	}

	if backingOff != 0 && backingLen != 0 {
		if backingLen > maxBackingName {
			return nil, fmt.Errorf("qcow2 header: backing file name of %d bytes (QEMU's limit is %d)", backingLen, maxBackingName)
		}
		if backingOff > clusterSize || uint64(backingLen) > clusterSize-backingOff {
			return nil, fmt.Errorf("qcow2 header: backing file name at %d+%d outside the first cluster", backingOff, backingLen)
		}
		name := make([]byte, backingLen)
		if _, err := readFull(r, name, int64(backingOff)); err != nil {
			return nil, fmt.Errorf("qcow2 backing file name: %w", err)
		}
		if bytes.IndexByte(name, 0) >= 0 {
			return nil, errors.New("qcow2 header: NUL in backing file name")
		}
		h.Backing = string(name)
	}
	return h, nil
}

// readFull reads exactly len(b) bytes at off.
func readFull(r io.ReaderAt, b []byte, off int64) (int, error) {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return n, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// fsReaderAt adapts an fs.File to io.ReaderAt.
type fsReaderAt struct{ f fs.File }

// ReadAt implements io.ReaderAt.ReadAt.
func (r fsReaderAt) ReadAt(b []byte, off int64) (int, error) { return readAt(r.f, b, off) }

// readQCOW2 opens abs in fsys and parses its header; errNotQCOW2 when it
// is another format.
func readQCOW2(fsys fs.FS, abs string) (*QCOW2Header, error) {
	f, err := open(fsys, abs)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := ParseQCOW2Header(fsReaderAt{f})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", abs, err)
	}
	return h, nil
}
