package glob

import (
	"path"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		name, pattern, s string
		want             bool
	}{
		{"literal", "/dev/kvm", "/dev/kvm", true},
		{"literal other", "/dev/kvm", "/dev/kvm2", false},
		{"star in element", "/usr/lib/*.so", "/usr/lib/libc.so", true},
		{"star does not cross slash", "/usr/lib/*.so", "/usr/lib/x/libc.so", false},
		{"star matches empty", "/a/*", "/a/", true},
		{"star alone not crossing", "/a/*", "/a/b/c", false},
		{"double star deep", "/usr/share/qemu/**", "/usr/share/qemu/keymaps/en-us", true},
		{"double star the dir itself", "/usr/share/qemu/**", "/usr/share/qemu", true},
		{"double star sibling", "/usr/share/qemu/**", "/usr/share/qemu2/x", false},
		{"double star middle zero", "/a/**/b", "/a/b", true},
		{"double star middle many", "/a/**/b", "/a/x/y/b", true},
		{"double star middle no b", "/a/**/b", "/a/x/y/c", false},
		{"double star then star backtrack", "/a/**/b*/c", "/a/x/by/bz/c", true},
		{"double star then star fail", "/a/**/b*/c", "/a/x/by/bz/d", false},
		{"leading double star", "**/passwd", "/etc/passwd", true},
		{"question", "/dev/tty?", "/dev/ttyS", true},
		{"question not slash", "/a?b", "/a/b", false},
		{"class", "/dev/vhost-[a-z]*", "/dev/vhost-net", true},
		{"class negate", "/dev/sd[!a]", "/dev/sda", false},
		{"class negate match", "/dev/sd[!a]", "/dev/sdb", true},
		{"escape star", `/a/\*`, "/a/*", true},
		{"escape star literal only", `/a/\*`, "/a/b", false},
		{"thread vcpu", "CPU */KVM", "CPU 12/KVM", true},
		{"thread vcpu tcg", "CPU */KVM", "CPU 1/TCG", false},
		{"abstract", "@qemu-*", "@qemu-mon", true},
		{"multi star", "/a/*x*y*", "/a/zzxzzyzz", true},
		{"multi star fail", "/a/*x*y*", "/a/zzyzzxzz", false},
		{"unicode one", "/é?", "/éü", true},
		{"empty pattern empty", "", "", true},
		{"empty pattern", "", "x", false},
		{"trailing slash", "/a/*/", "/a/b/", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := Compile(tt.pattern)
			if err != nil {
				t.Fatalf("Compile(%q): %v", tt.pattern, err)
			}
			if got := g.Match(tt.s); got != tt.want {
				t.Errorf("%q.Match(%q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct{ name, pattern, want string }{
		{"double star inside element", "/usr/**.so", `pattern "/usr/**.so": at offset 5: "**" must be a whole path element, as in "/a/**/b"`},
		{"triple star", "/a/***", `pattern "/a/***": at offset 3: "**" must be a whole path element, as in "/a/**/b"`},
		{"unterminated class", "/a/[bc", `pattern "/a/[bc": at offset 3: unterminated "["`},
		{"trailing backslash", `/a\`, `pattern "/a\\": at offset 2: trailing backslash`},
		{"bad range", "/[z-a]", `pattern "/[z-a]": at offset 1: bad range 'z'-'a'`},
		{"slash in class", "/[a/b]", `pattern "/[a/b]": at offset 1: unterminated "["`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.pattern)
			if err == nil {
				t.Fatalf("Compile(%q): no error", tt.pattern)
			}
			if err.Error() != tt.want {
				t.Errorf("Compile(%q) = %q, want %q", tt.pattern, err, tt.want)
			}
		})
	}
}

var fuzzCorpus = []struct{ pattern, s string }{
	{"/usr/share/qemu/**", "/usr/share/qemu/bios.bin"},
	{"/a/**/b*/c", "/a/x/by/bz/c"},
	{"CPU */KVM", "CPU 0/KVM"},
	{"[!a-z]?*", "Zx"},
	{`\*`, "*"},
	{"**", ""},
	{"/**/**/x", "/x"},
}

// checkGlob is the body of FuzzMatch: matching never panics, a literal
// pattern matches itself, and patterns without "**" or classes agree with
// path.Match.
func checkGlob(t *testing.T, pattern, s string) {
	g, err := Compile(pattern)
	if err != nil {
		return
	}
	got := g.Match(s)
	if !strings.ContainsAny(pattern, `*?[\`) && got != (pattern == s) {
		t.Errorf("literal %q.Match(%q) = %v", pattern, s, got)
	}
	if strings.Contains(pattern, "**") || strings.ContainsAny(pattern, `[\`) {
		return
	}
	want, err := path.Match(pattern, s)
	if err == nil && want != got {
		t.Errorf("%q.Match(%q) = %v, path.Match says %v", pattern, s, got, want)
	}
}

func TestFuzzCorpus(t *testing.T) {
	for _, c := range fuzzCorpus {
		t.Run(c.pattern, func(t *testing.T) { checkGlob(t, c.pattern, c.s) })
	}
}

func FuzzMatch(f *testing.F) {
	for _, c := range fuzzCorpus {
		f.Add(c.pattern, c.s)
	}
	f.Fuzz(checkGlob)
}

func BenchmarkMatch(b *testing.B) {
	g := MustCompile("/usr/lib/x86_64-linux-gnu/**/*.so*")
	s := "/usr/lib/x86_64-linux-gnu/qemu/block-curl.so"
	for b.Loop() {
		if !g.Match(s) {
			b.Fatal("no match")
		}
	}
}
