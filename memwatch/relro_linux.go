package memwatch

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
)

// deflate compresses a RELRO baseline copy. BestSpeed: the copy is made
// once per mapping at baseline time and read back only by a scrub or a
// finding, and its pointers share their high bytes, so even the fastest
// level shrinks it about tenfold.
func deflate(b []byte) ([]byte, error) {
	var out bytes.Buffer
	zw, err := flate.NewWriter(&out, flate.BestSpeed)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return bytes.Clone(out.Bytes()), nil
}

// relroOf returns r's RELRO baseline, inflated once per scan or scrub.
//
// Preconditions: w.mu is held.
func (w *Watcher) relroOf(r *region) ([]byte, error) {
	if w.relroLive.r == r {
		return w.relroLive.b, nil
	}
	n := int(r.End - r.Start)
	b := make([]byte, n)
	zr := flate.NewReader(bytes.NewReader(r.relroZ))
	_, err := io.ReadFull(zr, b)
	if err == nil {
		err = zr.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("baseline copy of %s's RELRO at %#x: %w", r.Path, r.Start, err)
	}
	w.relroLive.r, w.relroLive.b = r, b
	return b, nil
}

// dropRELROLocked lets the inflated RELRO baseline go.
//
// Preconditions: w.mu is held.
func (w *Watcher) dropRELROLocked() { w.relroLive.r, w.relroLive.b = nil, nil }
