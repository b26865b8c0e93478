package memwatch

import (
	"debug/elf"
	"encoding/binary"
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
	if img := readProgs64(r); img != nil {
		return img, nil
	}
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

// readProgs64 reads the program headers of a little-endian 64-bit ELF
// file (QEMU's, on x86_64 and arm64) with two reads: debug/elf.NewFile
// also reads and checks every section header and the section names,
// which memwatch, like the dynamic loader, has no use for. It returns
// nil for any other file, or one it cannot read so, and readELF then
// asks debug/elf (which says what is wrong).
func readProgs64(r io.ReaderAt) *elfImage {
	var hb [64]byte
	if _, err := r.ReadAt(hb[:], 0); err != nil {
		return nil
	}
	if string(hb[:4]) != elf.ELFMAG || elf.Class(hb[elf.EI_CLASS]) != elf.ELFCLASS64 || elf.Data(hb[elf.EI_DATA]) != elf.ELFDATA2LSB {
		return nil
	}
	var h elf.Header64
	if _, err := binary.Decode(hb[:], binary.LittleEndian, &h); err != nil {
		return nil
	}
	const phsize = 56                                               // sizeof(Elf64_Phdr)
	if h.Phentsize != phsize || h.Phnum == 0 || h.Phnum == 0xffff { // PN_XNUM: the count is elsewhere
		return nil
	}
	pb := make([]byte, int(h.Phnum)*phsize)
	if _, err := r.ReadAt(pb, int64(h.Phoff)); err != nil {
		return nil
	}
	img := &elfImage{}
	for i := range int(h.Phnum) {
		var p elf.Prog64
		if _, err := binary.Decode(pb[i*phsize:], binary.LittleEndian, &p); err != nil {
			return nil
		}
		ph := elf.ProgHeader{Type: elf.ProgType(p.Type), Flags: elf.ProgFlag(p.Flags), Off: p.Off, Vaddr: p.Vaddr, Paddr: p.Paddr,
			Filesz: p.Filesz, Memsz: p.Memsz, Align: p.Align}
		switch ph.Type {
		case elf.PT_LOAD:
			img.loads = append(img.loads, ph)
		case elf.PT_GNU_RELRO:
			img.relro = &ph
		}
	}
	if len(img.loads) == 0 {
		return nil
	}
	return img
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
