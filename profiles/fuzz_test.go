package profiles

import (
	"errors"
	"strings"
	"testing"

	"kfv/profiles/glob"
)

// parseCorpus seeds FuzzParse and is run as a plain test as well.
var parseCorpus = []string{
	"",
	"name = \"x\"\n",
	"name = \"x\"\n[defaults]\naction = \"deny\"\nerrno = 1\n",
	"name = 'x'\n[[syscall]]\nnames = [\"read\"]\naction = \"allow\"\nreason = \"\"\"\nmulti\nline\"\"\"\n",
	"name = \"x\"\n[[syscall]]\nnames = [\"ioctl\"]\naction = \"allow\"\nreason = \"r\"\n[[syscall.args]]\nindex = 1\nop = \"in\"\nvalues = [\"KVM_RUN\"]\n",
	"name = \"x\"\n[[syscall]]\nnames = [\"mmap\"]\naction = \"allow\"\nreason = \"r\"\nargs = [{index=2,op=\"masked_eq\",mask=\"PROT_EXEC\",value=0}]\n",
	"name = \"x\"\n[[rule]]\nname = \"a\"\n\"paths\" = [\"/a/**\", # comment\n  \"/b\"]\nverdict = \"deny\"\nreason = 'r'\n",
	"name = \"x\"\nrule = 3\nsyscall = [1, 2]\ndefaults = []\n",
	"name = \"x\"\n[[rule]]\nname.first = \"a\"\n",
	"[[syscall]]\n[[syscall]]\nnames=[]\n[[rule]]\naddresses=[\"[\", \"@\", \"/\", \"1.2.3.4:99999\"]\n",
	"name = \"\u00e9\"\ndescription = \"\"\"a\\\"\"\"\"\n",
	"x = [1,\n",
	"= 1",
	"name = \"x\"\n[[hrsc]]\nname = \"vcpu*\"\nthreads = [\"CPU */KVM\"]\nnumbered = true\nreason = \"r\"\n[[detector]]\nname = \"r\"\nkind = \"rate\"\nthreshold = 2\nwindow = \"1s\"\nreason = \"r\"\n[[ho]]\nlayers = \"L1\"\ndeny = \">=high\"\nreason = \"r\"\n[[correlate]]\nname = \"c\"\nmatch = { severity = \">=high\" }\nreactions = [\"link_down:all-nics\"]\nreason = \"r\"\n",
}

// checkParse is FuzzParse's body: Parse never panics, every error has a
// position inside the source, and a profile that loads is usable: its
// patterns and addresses compile and every deny has an errno.
func checkParse(t *testing.T, src string) {
	p, err := Parse("f.toml", []byte(src))
	if err != nil {
		var list ErrorList
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("error %T %v is not a non-empty ErrorList", err, err)
		}
		lines := strings.Count(src, "\n") + 1
		for _, e := range list {
			if e.Pos.File != "f.toml" || e.Pos.Line < 1 || e.Pos.Line > lines || e.Pos.Col < 1 {
				t.Errorf("error without a position in the source: %q (pos %+v, %d lines)", e, e.Pos, lines)
			}
			if e.Msg == "" {
				t.Errorf("empty message at %s", e.Pos)
			}
		}
		return
	}
	if p.Name == "" {
		t.Error("profile without a name loaded")
	}
	for _, r := range p.Syscalls {
		if r.Action == ActDeny && r.Errno == 0 {
			t.Errorf("%s: deny without errno", r.Pos)
		}
		for _, c := range r.Args {
			if c.Index < 0 || c.Index > 5 || len(c.Values) == 0 {
				t.Errorf("%s: bad condition %+v", c.Pos, c)
			}
		}
	}
	for _, r := range p.Rules {
		if r.Verdict == VerdictDeny && r.Errno == 0 {
			t.Errorf("%s: deny without errno", r.Pos)
		}
		for _, g := range append(append([]string{}, r.Paths...), r.Threads...) {
			if _, err := glob.Compile(g); err != nil {
				t.Errorf("%s: loaded pattern does not compile: %v", r.Pos, err)
			}
		}
		for _, a := range r.Addresses {
			if _, err := ParseAddress(a); err != nil {
				t.Errorf("%s: loaded address does not parse: %v", r.Pos, err)
			}
		}
	}
}

func TestParseCorpus(t *testing.T) {
	for i, src := range parseCorpus {
		t.Run(strings.ReplaceAll(src[:min(len(src), 20)], "\n", " ")+"#"+string(rune('a'+i)), func(t *testing.T) {
			checkParse(t, src)
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, src := range parseCorpus {
		f.Add(src)
	}
	if data, err := builtinFS.ReadFile("builtin/qemu.toml"); err == nil {
		f.Add(string(data))
	}
	f.Fuzz(checkParse)
}
