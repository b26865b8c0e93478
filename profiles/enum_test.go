package profiles

import (
	"slices"
	"testing"
)

func TestEnumNames(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{SevHigh.String(), "high"},
		{Severity(0).String(), "Severity(0)"},
		{Severity(9).String(), "Severity(9)"},
		{ActInspect.String(), "inspect"},
		{Action(7).String(), "Action(7)"},
		{VerdictDeny.String(), "deny"},
		{Verdict(3).String(), "Verdict(3)"},
		{OpMaskedEq.String(), "masked_eq"},
		{Op(-1).String(), "Op(-1)"},
		{ReactRestartCheckpoint.String(), "restart_checkpoint"},
		{numReactionKinds.String(), "ReactionKind(12)"},
		{orList(nil), ""},
		{orList([]string{"a"}), "a"},
		{orList([]string{"a", "b"}), "a or b"},
		{orList([]string{"a", "b", "c"}), "a, b or c"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	if v, err := verdicts.parse("allow"); v != VerdictAllow || err != nil {
		t.Errorf(`parse("allow") = %v, %v`, v, err)
	}
	if _, err := verdicts.parse(""); err == nil || err.Error() != `unknown verdict "" (want allow or deny)` {
		t.Errorf(`parse("") error %v`, err)
	}
}

// TestDetectorNames checks that every detector has one name, that the
// [[detector]] kinds are among them, and that the list is sorted (it is
// printed in error messages).
func TestDetectorNames(t *testing.T) {
	all := []string{DetBehaviour, DetRate, DetOrigin, DetSignature, DetMemwatch}
	if got, want := DetectorNames, slices.Sorted(slices.Values(all)); !slices.Equal(got, want) {
		t.Errorf("DetectorNames = %v, want %v", got, want)
	}
	for _, k := range DetectorKinds {
		if !slices.Contains(DetectorNames, k) {
			t.Errorf("detector kind %q is not in DetectorNames", k)
		}
	}
	if slices.Contains(DetectorKinds, DetSignature) || slices.Contains(DetectorKinds, DetMemwatch) {
		t.Errorf("DetectorKinds = %v: signature and memwatch are no [[detector]] kinds", DetectorKinds)
	}
}
