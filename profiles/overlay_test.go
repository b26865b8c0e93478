package profiles

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const overlayRule = `
[[rule]]
name = "site-extent"
syscalls = ["openat"]
paths = ["/srv/vm1/disk-f001.vmdk"]
verdict = "allow"
reason = "the VM's VMDK extent"
`

// TestOverlay: an overlay's rules come after the profile's, which it
// otherwise keeps whole.
func TestOverlay(t *testing.T) {
	dir := t.TempDir()
	ov := writeFile(t, dir, "ov.toml", "extends = \"qemu\"\nname = \"site\"\n"+overlayRule)
	base, err := Builtin("qemu")
	if err != nil {
		t.Fatal(err)
	}
	for _, load := range []func() (*Profile, error){
		func() (*Profile, error) { return Load(ov) },
		func() (*Profile, error) { return ResolveWithOverlay("qemu", ov) },
	} {
		p, err := load()
		if err != nil {
			t.Fatal(err)
		}
		if p.Extends != "builtin:qemu" || p.Name != "site" || p.Source != ov {
			t.Errorf("overlay: extends %q, name %q, source %q", p.Extends, p.Name, p.Source)
		}
		if len(p.Rules) != len(base.Rules)+1 || p.Rules[len(p.Rules)-1].Name != "site-extent" || p.Rules[0].Name != base.Rules[0].Name {
			t.Errorf("overlay rules: %d (base %d), last %q: want the base's, then the overlay's", len(p.Rules), len(base.Rules), p.Rules[len(p.Rules)-1].Name)
		}
		if len(p.Syscalls) != len(base.Syscalls) || len(p.Detectors) != len(base.Detectors) || p.DefaultVerdict != base.DefaultVerdict {
			t.Errorf("the overlay changed the profile's filter, detectors or defaults")
		}
	}
	if base2, _ := Builtin("qemu"); len(base2.Rules) != len(base.Rules) {
		t.Errorf("stacking changed the built-in profile")
	}
}

// TestOverlayErrors: what an overlay may not do is reported where it is
// written.
func TestOverlayErrors(t *testing.T) {
	dir := t.TempDir()
	ok := writeFile(t, dir, "ok.toml", "extends = \"qemu\"\nname = \"site\"\n"+overlayRule)
	for _, tc := range []struct {
		name, text, want string
	}{
		{"kernel-filter", "extends = \"qemu\"\nname = \"x\"\n[[syscall]]\nnames = [\"read\"]\naction = \"allow\"\nreason = \"r\"\n", ":3:1: unknown key \"syscall\" in an overlay"},
		{"defaults", "extends = \"qemu\"\nname = \"x\"\n[defaults]\nverdict = \"allow\"\n", ":3:1: unknown key \"defaults\""},
		{"duplicate", "extends = \"qemu\"\nname = \"x\"\n[[rule]]\nname = \"no-exec\"\nverdict = \"allow\"\nreason = \"r\"\n", ":4:8: rule name \"no-exec\" already used at builtin:qemu:"},
		{"typo", "extends = \"qemu\"\nname = \"x\"\n[[rule]]\nname = \"y\"\nsyscals = [\"openat\"]\nverdict = \"allow\"\nreason = \"r\"\n", ":5:1: unknown key \"syscals\""},
		{"no-base", "extends = \"nosuch\"\nname = \"x\"\n", ":1:11: extends \"nosuch\": no builtin profile"},
		{"chain", "extends = \"ok.toml\"\nname = \"x\"\n", ":1:11: extends \"ok.toml\": that is an overlay itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, dir, tc.name+".toml", tc.text)
			_, err := Load(p)
			if err == nil || !strings.Contains(err.Error(), p+tc.want) {
				t.Errorf("got %v, want %s%s", err, p, tc.want)
			}
		})
	}
	// Stacked on a profile it was not written for, or not an overlay.
	if _, err := ResolveWithOverlay(ok, ok); err == nil {
		t.Errorf("an overlay stacked on itself was accepted")
	}
	other := writeFile(t, dir, "other.toml", "extends = \""+ok+"\"\nname = \"x\"\n")
	if _, err := ResolveWithOverlay("qemu", other); err == nil {
		t.Errorf("an overlay of another profile was stacked on qemu")
	}
	plain, err := BuiltinSource("qemu")
	if err != nil {
		t.Fatal(err)
	}
	pf := writeFile(t, dir, "plain.toml", string(plain))
	if _, err := ResolveWithOverlay("qemu", pf); err == nil || !strings.Contains(err.Error(), "not an overlay") {
		t.Errorf("a profile used as an overlay: %v", err)
	}
}

// TestOverlayRuleWarnings: an overlay rule for a call the profile's kernel
// filter never sends to kfv is pointless, and says so.
func TestOverlayRuleWarnings(t *testing.T) {
	p := writeFile(t, t.TempDir(), "w.toml", "extends = \"qemu\"\nname = \"x\"\n[[rule]]\nname = \"y\"\nsyscalls = [\"read\"]\nverdict = \"allow\"\nreason = \"r\"\n")
	prof, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, w := range prof.Warnings {
		found = found || strings.Contains(w, p+":5:") && strings.Contains(w, "never sends to the supervisor")
	}
	if !found {
		t.Errorf("no warning for a rule on an allowed syscall: %q", prof.Warnings)
	}
}
