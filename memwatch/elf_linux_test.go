package memwatch

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// buildPIE builds a small position-independent Go program that sleeps:
// dynamically linked, relocated by ld.so, with a PT_GNU_RELRO segment.
func buildPIE(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not in PATH: the test builds a PIE binary with it")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	prog := "package main\n\nimport \"time\"\n\nvar table = []*int{new(int), new(int)}\n\nfunc main() { time.Sleep(time.Hour); println(table[0]) }\n"
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "pie")
	cmd := exec.Command(goTool, "build", "-buildmode=pie", "-o", bin, src)
	cmd.Env = append(os.Environ(), "GO111MODULE=off", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -buildmode=pie: %v\n%s", err, out)
	}
	return bin
}

func TestELFClassify(t *testing.T) {
	bin := buildPIE(t)
	f, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := readELF(f)
	if err != nil {
		t.Fatal(err)
	}
	if img.relro == nil {
		t.Fatal("PIE binary without PT_GNU_RELRO")
	}
	var text, ro *elf.ProgHeader
	for i := range img.loads {
		p := &img.loads[i]
		switch {
		case p.Flags&elf.PF_X != 0:
			text = p
		case p.Flags&elf.PF_W == 0 && ro == nil:
			ro = p
		}
	}
	if text == nil || ro == nil {
		t.Fatalf("segments %+v: want a text and a read-only one", img.loads)
	}
	cases := []struct {
		name  string
		vaddr uint64
		exec  bool
		want  Class
	}{
		{"text", text.Vaddr + 16, true, ClassText},
		{"rodata", ro.Vaddr + 16, false, ClassRodata},
		{"relro", img.relro.Vaddr + 8, false, ClassRELRO},
		{"outside any segment", 1 << 46, false, ClassRodata},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := img.classify(c.vaddr, c.exec); got != c.want {
				t.Errorf("classify(%#x, %v) = %v, want %v", c.vaddr, c.exec, got, c.want)
			}
		})
	}
	const base = 0x555500000000
	first := img.loads[0]
	m := Mapping{Start: base + pageDown(first.Vaddr), End: base + pageUp(first.Vaddr+first.Memsz), Offset: pageDown(first.Off)}
	if b, err := img.bias(m); err != nil || b != base {
		t.Errorf("bias = %#x, %v; want %#x", b, err, uint64(base))
	}
	if _, err := img.bias(Mapping{Offset: 1 << 40}); err == nil {
		t.Error("bias of an offset in no segment: no error")
	}
	if _, err := readELF(os.Stdin); err == nil {
		t.Error("readELF of a non-ELF file: no error")
	}
}

// watchPIE starts the PIE program and a watcher of it with cfg, waits
// until its mappings are stable, and returns the watcher and the pid.
func watchPIE(t *testing.T, cfg Config) (*Watcher, int) {
	t.Helper()
	cmd := exec.Command(buildPIE(t))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cmd.Process.Kill(); err != nil {
			t.Errorf("kill: %v", err)
		}
		if err := cmd.Wait(); err == nil {
			t.Error("killed program exited cleanly")
		}
	})
	w, err := New(cmd.Process.Pid, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	ctx, cancel := contextWithTimeout(5 * time.Second)
	defer cancel()
	if err := w.WaitStable(ctx, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	return w, cmd.Process.Pid
}

// TestBaselinePIE baselines a running PIE program: text and rodata match
// the file, RELRO is found and hashed as found.
func TestBaselinePIE(t *testing.T) {
	w, _ := watchPIE(t, Config{})
	cov, found, err := w.Baseline()
	if err != nil {
		t.Fatal(err)
	}
	if len(found) > 0 {
		t.Fatalf("findings: %v", found)
	}
	if cov.TextBytes == 0 || cov.RodataBytes == 0 || cov.RELROBytes == 0 || cov.ComparedBytes != cov.TextBytes+cov.RodataBytes {
		t.Fatalf("coverage %+v", cov)
	}
	if _, _, err := w.Baseline(); err == nil {
		t.Error("second baseline: no error")
	}
}

// TestReadProgs64 checks that the program headers read directly are
// debug/elf's, for this test binary and every ELF file QEMU maps.
func TestReadProgs64(t *testing.T) {
	files := map[string]bool{testExe(t): true}
	pid := startIdleQEMU(t)
	ctx, cancel := contextWithTimeout(10 * time.Second)
	defer cancel()
	w, err := New(pid, Config{Accel: "tcg"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.WaitStable(ctx, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	maps, err := w.readMaps()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range maps {
		if watchable(&m) {
			files[m.Path] = true
		}
	}
	n := 0
	for p := range files {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		ef, err := elf.NewFile(f)
		if err != nil {
			f.Close()
			continue // not ELF
		}
		var want elfImage
		for _, pr := range ef.Progs {
			switch pr.Type {
			case elf.PT_LOAD:
				want.loads = append(want.loads, pr.ProgHeader)
			case elf.PT_GNU_RELRO:
				h := pr.ProgHeader
				want.relro = &h
			}
		}
		got := readProgs64(f)
		f.Close()
		if got == nil || !reflect.DeepEqual(got.loads, want.loads) || (got.relro == nil) != (want.relro == nil) || got.relro != nil && *got.relro != *want.relro {
			t.Errorf("%s: read directly %+v, debug/elf %+v", p, got, want)
		}
		n++
	}
	if n < 10 {
		t.Fatalf("only %d ELF files compared", n)
	}
	t.Logf("%d ELF files compared", n)
	if readProgs64(strings.NewReader("not an ELF file at all, but long enough for a header............")) != nil {
		t.Error("a file that is not ELF read as ELF")
	}
}

// TestRELROTamperAndScrub patches a RELRO page of a running PIE program,
// whose baseline copy memwatch keeps compressed: the scan reports the
// bytes that differ from the copy, and the scrub puts the copy back.
func TestRELROTamperAndScrub(t *testing.T) {
	// Full tracking: without soft-dirty bits RELRO is otherwise left to
	// the sweep.
	w, pid := watchPIE(t, Config{Tracking: TrackFull, SweepPeriod: -1})
	if _, found, err := w.Baseline(); err != nil || len(found) > 0 {
		t.Fatalf("baseline: %v %v", found, err)
	}
	// The middle of the program's last RELRO page: pointers of its own
	// type data, which a sleeping program does not read.
	var at uint64
	for _, r := range w.regions {
		if len(r.relroZ) == 0 || len(r.relroZ) >= int(r.End-r.Start) {
			continue
		}
		for i := r.pages() - 1; i >= 0 && at == 0; i-- {
			if r.class[i] == ClassRELRO {
				at = r.Start + uint64(i)*PageSize + PageSize/2
			}
		}
	}
	if at == 0 {
		t.Fatal("no RELRO page with a compressed baseline copy")
	}
	patch := []byte{0xde, 0xad, 0xbe, 0xef}
	old := tamper(t, pid, at, patch)
	found, _, err := w.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].Kind != KindModified || found[0].Class != ClassRELRO || found[0].Start > at || found[0].End <= at ||
		found[0].Differing != diffBytes(old, patch) || found[0].Detail != "" {
		t.Fatalf("after patching RELRO at %#x: findings %v", at, found)
	}
	rep, err := w.Scrub(context.Background())
	if err != nil {
		t.Fatalf("Scrub: %v", err)
	}
	if !rep.Verified || rep.PagesRestored != 1 {
		t.Fatalf("scrub report %+v", rep)
	}
	if got := readMem(t, pid, at, len(old)); !bytes.Equal(got, old) {
		t.Fatalf("after scrub %#x holds % x, want % x", at, got, old)
	}
	if w.relroLive.b != nil {
		t.Error("the inflated RELRO copy outlived the scrub")
	}
}
