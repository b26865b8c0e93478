//go:build linux

package seccompnotify

import (
	"encoding/binary"
	"strings"
	"testing"
)

func TestRingFlags(t *testing.T) {
	cases := []struct {
		name  string
		flags uint32
		want  string // "" admitted, else a word of the reason
	}{
		{"none (QEMU 7.2 and 10.0)", 0, ""},
		{"sizes and batching", ioringSetupCQSize | ioringSetupClamp | ioringSetupSubmitAll | ioringSetupCoopTaskrun | ioringSetupTaskrunFlag, ""},
		{"big entries", ioringSetupSQE128 | ioringSetupCQE32 | ioringSetupNoSQArray, ""},
		{"sqpoll", ioringSetupSQPoll, "SQPOLL"},
		{"sq_aff", ioringSetupSQAff, "SQ_AFF"},
		{"attach_wq", ioringSetupAttachWQ, "ATTACH_WQ"},
		{"r_disabled", ioringSetupRDisabled, "R_DISABLED"},
		{"iopoll", ioringSetupIOPoll, "IOPOLL"},
		{"single issuer", ioringSetupSingleIssuer, "SINGLE_ISSUER"},
		{"defer taskrun", ioringSetupDeferTaskrun | ioringSetupSingleIssuer, "DEFER_TASKRUN"},
		{"no_mmap", ioringSetupNoMmap, "NO_MMAP"},
		{"registered fd only", ioringSetupRegisteredFDOnly, "REGISTERED_FD_ONLY"},
		{"unknown", 1 << 17, "0x20000 unknown"},
		{"unknown high", 1 << 31, "0x80000000 unknown"},
		{"admitted with a refused one", ioringSetupCQSize | ioringSetupSQPoll, "SQPOLL"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ringFlagsProblem(c.flags)
			switch {
			case c.want == "" && got != "":
				t.Errorf("flags %#x refused: %s", c.flags, got)
			case c.want != "" && !strings.Contains(got, c.want):
				t.Errorf("flags %#x: %q, want a reason naming %s", c.flags, got, c.want)
			}
		})
	}
}

func TestRingEntries(t *testing.T) {
	params := func(flags, cq uint32) *ringParams {
		var p ringParams
		p.setFlags(flags)
		p.setWord(4, cq)
		return &p
	}
	cases := []struct {
		name         string
		entries      uint32
		p            *ringParams
		want, wantCQ uint32
		refused      bool
	}{
		{"QEMU's 128", 128, params(0, 0), 128, 0, false},
		{"the cap", maxRingEntries, params(0, 0), maxRingEntries, 0, false},
		{"over the cap", maxRingEntries + 1, params(0, 0), 0, 0, true},
		{"over the cap, clamped", 32768, params(ioringSetupClamp, 0), maxRingEntries, 0, false},
		{"cq over the cap", 8, params(ioringSetupCQSize, 2*maxRingEntries+1), 0, 0, true},
		{"cq clamped", 8, params(ioringSetupCQSize|ioringSetupClamp, 65536), 8, 2 * maxRingEntries, false},
		{"cq ignored without CQSIZE", 8, params(0, 65536), 8, 65536, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, why := admitRing(c.entries, c.p)
			if (why != "") != c.refused {
				t.Fatalf("admitRing(%d) = %d, %q; refused want %v", c.entries, got, why, c.refused)
			}
			if c.refused {
				return
			}
			if got != c.want || c.p.cqEntries() != c.wantCQ {
				t.Errorf("admitRing(%d) = %d entries, cq %d; want %d, cq %d", c.entries, got, c.p.cqEntries(), c.want, c.wantCQ)
			}
		})
	}
}

func TestRingRestrictions(t *testing.T) {
	b := ringRestrictions()
	if len(b) != len(ringOps)*ringRestrictionSize {
		t.Fatalf("%d bytes for %d ops", len(b), len(ringOps))
	}
	var ops []uint8
	for i := 0; i < len(b); i += ringRestrictionSize {
		r := b[i : i+ringRestrictionSize]
		if op := binary.NativeEndian.Uint16(r); op != ioringRestrictionSQEOp {
			t.Errorf("restriction %d: opcode %d, want IORING_RESTRICTION_SQE_OP", i/ringRestrictionSize, op)
		}
		for j, x := range r[3:] {
			if x != 0 {
				t.Errorf("restriction %d: reserved byte %d is %d", i/ringRestrictionSize, 3+j, x)
			}
		}
		ops = append(ops, r[2])
	}
	// IORING_OP_READV, WRITEV, FSYNC, POLL_ADD, POLL_REMOVE, TIMEOUT: the
	// ops of QEMU's block/io_uring.c and util/fdmon-io_uring.c.
	want := []uint8{1, 2, 3, 6, 7, 11}
	if string(ops) != string(want) {
		t.Errorf("ops %v, want %v", ops, want)
	}
	if got := strings.Join(ringOpNames(), ","); got != "readv,writev,fsync,poll_add,poll_remove,timeout" {
		t.Errorf("names %s", got)
	}
}
