package memwatch

import (
	"debug/elf"
	"fmt"
	"io"
)

// Class says what a watched page holds and so how it is checked.
type Class uint8

const (
	// ClassText is executable code: compared byte for byte with the
	// file.
	ClassText Class = iota + 1
	// ClassRodata is read-only data of a read-only segment (and the ELF
	// headers): compared byte for byte with the file.
	ClassRodata
	// ClassRELRO is a page of a writable segment that the dynamic loader
	// relocated and then made read-only (PT_GNU_RELRO: .data.rel.ro,
	// .got, .init_array...). Its pointers differ from the file by the
	// load bias, so it is hashed as found at baseline time: tampering
	// before the baseline is not caught for RELRO.
	ClassRELRO
)

func (c Class) String() string {
	switch c {
	case ClassText:
		return "text"
	case ClassRodata:
		return "rodata"
	case ClassRELRO:
		return "relro"
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// elfImage is what memwatch needs of an ELF file: its loadable segments
// and its RELRO range, in link-time addresses.
type elfImage struct {
	loads []elf.ProgHeader
	relro *elf.ProgHeader // nil without PT_GNU_RELRO
}

// readELF reads the program headers of the ELF file in r.
func readELF(r io.ReaderAt) (*elfImage, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("parse elf: %w", err)
	}
	img := &elfImage{}
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_LOAD:
			img.loads = append(img.loads, p.ProgHeader)
		case elf.PT_GNU_RELRO:
			h := p.ProgHeader
			img.relro = &h
		}
	}
	if len(img.loads) == 0 {
		return nil, fmt.Errorf("parse elf: no PT_LOAD segment")
	}
	return img, nil
}

func pageDown(x uint64) uint64 { return x &^ (PageSize - 1) }
func pageUp(x uint64) uint64   { return (x + PageSize - 1) &^ (PageSize - 1) }

// bias returns the load bias of the file (run-time address minus
// link-time address) given one of its mappings: the mapping of the
// segment holding file offset m.Offset. For an ET_EXEC file it is 0.
func (img *elfImage) bias(m Mapping) (uint64, error) {
	for _, p := range img.loads {
		lo := pageDown(p.Off)
		if m.Offset < lo || m.Offset >= pageUp(p.Off+p.Filesz) {
			continue
		}
		vaddr := pageDown(p.Vaddr) + (m.Offset - lo)
		return m.Start - vaddr, nil
	}
	return 0, fmt.Errorf("file offset %#x of mapping %#x is in no PT_LOAD segment", m.Offset, m.Start)
}

// classify says what the page at link-time address vaddr holds, in a
// mapping that is executable or not.
func (img *elfImage) classify(vaddr uint64, exec bool) Class {
	if exec {
		return ClassText
	}
	if r := img.relro; r != nil && vaddr >= pageDown(r.Vaddr) && vaddr < pageUp(r.Vaddr+r.Memsz) {
		return ClassRELRO
	}
	for _, p := range img.loads {
		if vaddr >= pageDown(p.Vaddr) && vaddr < pageUp(p.Vaddr+p.Memsz) {
			if p.Flags&elf.PF_W != 0 {
				// A page of a writable segment found read-only: the
				// loader relocated it, then protected it.
				return ClassRELRO
			}
			return ClassRodata
		}
	}
	return ClassRodata
}

// readPage reads the file page at off into buf (PageSize bytes, or a
// multiple), with zeros past the end of the file: exactly what a private
// file mapping shows before anything writes to it.
func readPage(r io.ReaderAt, off uint64, buf []byte) error {
	n, err := r.ReadAt(buf, int64(off))
	if err != nil && err != io.EOF {
		return fmt.Errorf("read file page at %#x: %w", off, err)
	}
	clear(buf[n:])
	return nil
}
