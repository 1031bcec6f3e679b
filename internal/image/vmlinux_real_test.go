package image

import (
	"debug/elf"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestExtractVmlinuxHost unpacks the host's installed kernel (a real Debian
// bzImage) and checks the result is an x86-64 ELF executable.
func TestExtractVmlinuxHost(t *testing.T) {
	imgs, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(imgs) == 0 {
		t.Skip("needs an installed kernel in /boot")
	}
	for _, img := range imgs {
		if _, err := os.ReadFile(img); err != nil {
			t.Skipf("needs a readable %s: %v", img, err)
		}
		dst := filepath.Join(t.TempDir(), "vmlinux")
		start := time.Now()
		if err := ExtractVmlinux(img, dst); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		f, err := elf.Open(dst)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fi, _ := os.Stat(dst)
		t.Logf("%s -> %d-byte vmlinux in %v, entry %#x, %d program headers", img, fi.Size(), took, f.Entry, len(f.Progs))
		if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
			t.Errorf("vmlinux is %v %v %v, want ELF64 x86-64 executable", f.Class, f.Machine, f.Type)
		}
		loads := 0
		for _, p := range f.Progs {
			if p.Type == elf.PT_LOAD {
				loads++
			}
		}
		if loads == 0 {
			t.Error("no PT_LOAD segments")
		}
	}
}
