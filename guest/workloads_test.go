package guest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"reflect"
	"testing"
)

func TestWorkloadHelpers(t *testing.T) {
	console := []byte("KFV-BOOTED ms=1\r\nKFV-COUNT n=0\n[ 1.0] x KFV-COUNT n=1\nKFV-COUNT n=\nKFV-REBOOTING boot=1\nKFV-BOOTED ms=2\nKFV-COUNT n=0\n")
	t.Run("counts", func(t *testing.T) {
		if got, want := Counts(console), []int{0, 1, 0}; !reflect.DeepEqual(got, want) {
			t.Errorf("Counts = %v, want %v (a cut line is skipped)", got, want)
		}
	})
	t.Run("lines", func(t *testing.T) {
		if got, want := Lines(console, "KFV-BOOTED "), []string{"KFV-BOOTED ms=1", "KFV-BOOTED ms=2"}; !reflect.DeepEqual(got, want) {
			t.Errorf("Lines = %q, want %q", got, want)
		}
		if got := Fields("KFV-HOTPLUG added=eth0 mac=52:54:00:00:00:01"); got["mac"] != "52:54:00:00:00:01" || got["added"] != "eth0" {
			t.Errorf("Fields = %v", got)
		}
	})
	t.Run("reboot args", func(t *testing.T) {
		l := &Linux{Kernel: "k", Initrd: "i"}
		args := RebootArgs(LinuxArgs(l, "tcg", WorkloadReboot))
		for _, a := range args {
			if a == "-no-reboot" {
				t.Fatalf("RebootArgs kept -no-reboot: %q", args)
			}
		}
		if len(args) != len(LinuxArgs(l, "tcg", WorkloadReboot))-1 {
			t.Errorf("RebootArgs removed more than -no-reboot: %q", args)
		}
	})
	t.Run("pattern", func(t *testing.T) {
		var b bytes.Buffer
		if err := WritePattern(&b, 2); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b.Bytes())
		if b.Len() != 2<<20 || hex.EncodeToString(sum[:]) != PatternSHA256(2) || PatternSHA256(2) != patternSHA256(2) {
			t.Errorf("pattern: %d bytes, sha256 %x, PatternSHA256 %s, init.sh's %s", b.Len(), sum, PatternSHA256(2), patternSHA256(2))
		}
		if !bytes.HasPrefix(b.Bytes()[1<<20:], []byte("0000000000000001kfv-pattern-")) {
			t.Errorf("second MiB does not start with its index")
		}
	})
	t.Run("missing modules", func(t *testing.T) {
		l := &Linux{Modules: []string{"6.1.0-1-amd64/kernel/drivers/ata/ahci.ko"}, Builtin: []string{"virtio-rng"}}
		if got := l.MissingModules("ahci", "sr_mod", "virtio_rng"); !reflect.DeepEqual(got, []string{"sr_mod"}) {
			t.Errorf("MissingModules = %q, want [sr_mod]", got)
		}
	})
}
