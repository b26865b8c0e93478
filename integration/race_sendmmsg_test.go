package integration

import (
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"kfv/event"
	"kfv/seccompnotify"
)

// race-sendmmsg is race-sendmsg with a vector of messages (see
// run_race_sendmmsg in implant/implant.c): QEMU's main thread sends three
// messages with one sendmmsg while another thread flips the fd between
// the allowed TCP connection and a UDP socket, and every message's
// msg_name between none and the forbidden UDP port. A kfv that performs
// sendmmsg sends the messages one by one on its own copy of the socket,
// each to the address it decided on, writes msg_len back into QEMU's
// array and returns the count; so besides the datagrams at the forbidden
// port (none) the test checks what QEMU was told against what arrived.

// sendmmsgMark begins each of race-sendmmsg's messages.
const sendmmsgMark = "kfv-race-sendmmsg"

// countMarked adds to n the bytes read from c, if c's first bytes are
// sendmmsgMark (race-sendmmsg's connection to the allowed peer).
func countMarked(c net.Conn, n *atomic.Int64) {
	buf := make([]byte, len(sendmmsgMark))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != sendmmsgMark {
		return
	}
	n.Add(int64(len(buf)))
	io.Copy(addTo{n}, c) // counts as it reads; ends when the implant closes
}

// addTo is an io.Writer that counts what is written to it.
type addTo struct{ n *atomic.Int64 }

func (a addTo) Write(p []byte) (int, error) {
	a.n.Add(int64(len(p)))
	return len(p), nil
}

// sendmmsgExtra returns the number field key of race-sendmmsg's report.
func sendmmsgExtra(t *testing.T, rep raceReport, key string) int64 {
	t.Helper()
	v, err := strconv.ParseInt(rep.extra[key], 10, 64)
	if err != nil {
		t.Fatalf("race-sendmmsg's report has no number %s= (fields after errno: %v)", key, rep.extra)
	}
	return v
}

// checkSendmmsgResults checks, for a run under kfv-run, what QEMU's main
// thread was told against what happened: every msg_len as the kernel
// leaves it (the message's length for each message sent, untouched for
// the others), and exactly the bytes of the messages said sent at the
// allowed peer (no message sent and not counted, none counted and not
// sent).
func checkSendmmsgResults(t *testing.T, r *raceVM, rep raceReport) {
	t.Helper()
	sent, bytes, badlen := sendmmsgExtra(t, rep, "sent"), sendmmsgExtra(t, rep, "bytes"), sendmmsgExtra(t, rep, "badlen")
	t.Logf("race-sendmmsg: %d messages sent in %d calls (calls by return value: %s), %d bytes", sent, rep.allowed, rep.extra["returns"], bytes)
	if badlen != 0 {
		t.Errorf("%d msg_len values in QEMU's array were not as the kernel leaves them (the message's length for each message sent, unchanged for the others)", badlen)
	}
	// The implant closed its socket before it reported; the bytes may
	// still be on their way to the listener.
	waitFor(5*time.Second, func() bool { return r.streamed() == bytes })
	if got := r.streamed(); got != bytes {
		t.Errorf("the allowed peer received %d bytes of race-sendmmsg's messages, the counts sendmmsg returned say %d", got, bytes)
	}
}

// checkSendmmsgEvents checks that the event stream accounts for every
// sendmmsg of the racing thread that failed: a deny (an address the
// policy refuses), or the performed call's own errno (EDESTADDRREQ: no
// address on the UDP socket, as natively). A failure with neither was the
// kernel's, after a CONTINUE, which a performed call never gets.
func checkSendmmsgEvents(t *testing.T, rep raceReport, evs []event.Event) {
	t.Helper()
	var denied, failed int
	why := map[string]int{}
	for _, e := range evs {
		n, ok := decisions(e)
		if !ok || e.TID != rep.tid || e.Syscall != "sendmmsg" {
			continue
		}
		switch {
		case e.Verdict == "deny":
			denied += n
			why["deny "+e.Rule+" "+e.Errno] += n
		case e.Errno != "":
			failed += n
			why["performed "+e.Errno] += n
		}
	}
	t.Logf("failed sendmmsg events of the racing thread: %d denied, %d performed and failed; by rule and errno: %v", denied, failed, why)
	if denied == 0 {
		t.Errorf("no deny of sendmmsg by the racing thread %d", rep.tid)
	}
	if denied+failed < rep.denied {
		t.Errorf("the implant saw %d failed sendmmsg calls, the event stream holds %d denies and %d failed performed calls by its thread %d: the others failed after kfv let them continue", rep.denied, denied, failed, rep.tid)
	}
}

// Sizes of struct mmsghdr on x86_64 and the most messages the kernel
// sends in one call (UIO_MAXIOV; it sends the first that many of a
// longer vector).
const (
	sizeofMmsghdr = 64
	maxMmsghdr    = 1024
)

// naiveNoAddressInVector says whether no mmsghdr of the vector of vlen at
// addr in process pid names an address (msg_name, the first field, is
// NULL), as read now: naiveStart's sendmsg check, message by message.
func naiveNoAddressInVector(pid int, addr, vlen uint64) bool {
	count := uint64(uint32(vlen))
	if count > maxMmsghdr {
		count = maxMmsghdr
	}
	buf := make([]byte, count*sizeofMmsghdr)
	if seccompnotify.ReadMem(pid, addr, buf) != nil {
		return false
	}
	for i := uint64(0); i < count; i++ {
		if binary.NativeEndian.Uint64(buf[i*sizeofMmsghdr:]) != 0 {
			return false
		}
	}
	return true
}
