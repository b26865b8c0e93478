package event

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// roundTrip checks that AppendJSON writes an object encoding/json reads
// back as the same event.
func roundTrip(t *testing.T, e Event) {
	t.Helper()
	if e.Chain == nil {
		e.Chain = []Link{}
	}
	b := e.AppendJSON(nil)
	var got Event
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("AppendJSON wrote invalid JSON %q: %v", b, err)
	}
	var want Event
	std, err := json.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(std, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("AppendJSON round trip:\n got  %+v\n want %+v\n json %s", got, want, b)
	}
}

func TestAppendJSON(t *testing.T) {
	ts := time.Date(2026, 11, 26, 1, 2, 3, 456789, time.UTC)
	cases := []Event{
		{Time: ts, Kind: KindDecision, VM: "vm1", PID: 1, TID: 2, Thread: "CPU 0/KVM", Syscall: "openat", Args: `path="/etc/shadow" args=[0x1]`, Verdict: "deny", Errno: "EACCES"},
		{Time: ts, Kind: KindReaction, Reaction: "link_down:all-nics", Outcome: OutcomeFailed, Detail: "no vNIC", Chain: []Link{{Time: ts, Layer: "L1", HRSC: "vcpu0", Detector: "signature", Severity: "high", Syscall: "ioctl", TID: 7, Rule: "r", Detail: "d"}}},
		{Time: ts, Detail: "quotes \" backslash \\ newline \n tab \t nul \x00 bell \x07 <html>&"},
		{Time: ts, Detail: "utf-8 é ✓ and bad \xff\xfe bytes, line sep \u2028 para \u2029"},
		{Time: ts.In(time.FixedZone("x", 3600)), Thread: "qemu-system-x86"},
	}
	for _, e := range cases {
		roundTrip(t, e)
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("thread", "args \" \\ \n", "\xff", 3)
	f.Fuzz(func(t *testing.T, a, b, c string, n int) {
		roundTrip(t, Event{Time: time.Unix(int64(n), int64(n)).UTC(), Thread: a, Args: b, Detail: c, PID: n, Chain: []Link{{Detail: a, TID: n}}})
	})
}
