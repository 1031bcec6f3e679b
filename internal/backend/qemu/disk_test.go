package qemu

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Every VM's overlay is a copy of one template qemu-img made once; the
// template is checked before each copy, and anything that is not an empty
// overlay of this very image is replaced, never copied in.
func TestRootOverlayTemplate(t *testing.T) {
	qimg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("needs qemu-img (qemu-utils)")
	}
	cache := t.TempDir()
	t.Setenv("MVM_CACHE_DIR", cache)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o444); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other.ext4")
	if err := os.WriteFile(other, make([]byte, 2<<20), 0o444); err != nil {
		t.Fatal(err)
	}

	vm1 := t.TempDir()
	p1, format, err := rootOverlay(ctx, img, vm1)
	if err != nil || format != "qcow2" {
		t.Fatalf("rootOverlay: %q %q %v", p1, format, err)
	}
	tpls, _ := filepath.Glob(filepath.Join(cache, "overlays", "*.qcow2"))
	if len(tpls) != 1 {
		t.Fatalf("templates: %v", tpls)
	}
	tpl := tpls[0]
	want, _ := os.ReadFile(tpl)
	got, _ := os.ReadFile(p1)
	if !bytes.Equal(got, want) {
		t.Fatal("the VM's overlay is not the template's bytes")
	}
	if fi, err := os.Stat(p1); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("overlay mode: %v %v", fi, err)
	}
	info, err := exec.Command(qimg, "info", p1).CombinedOutput()
	if err != nil || !strings.Contains(string(info), "backing file: "+img) {
		t.Fatalf("qemu-img info: %v\n%s", err, info)
	}
	// A second VM writes its own copy; the first VM's disk is untouched.
	if err := os.WriteFile(p1, append(got, 'x'), 0o600); err != nil {
		t.Fatal(err)
	}
	p2, _, err := rootOverlay(ctx, img, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p2); !bytes.Equal(b, want) {
		t.Fatal("second overlay differs from the template")
	}

	// Templates that do not fit are refused by the check...
	otherTpl := filepath.Join(t.TempDir(), "o.qcow2")
	if err := qemuImgOverlay(ctx, qimg, other, otherTpl); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"another image's": otherTpl,
		"not qcow2":       img,
		"missing":         filepath.Join(t.TempDir(), "none"),
	} {
		if err := checkOverlayTemplate(path, img, 1<<20); err == nil {
			t.Errorf("%s template accepted", name)
		}
	}
	// ...and a bad one in the cache is replaced before use.
	ob, _ := os.ReadFile(otherTpl)
	if err := os.WriteFile(tpl, ob, 0o600); err != nil {
		t.Fatal(err)
	}
	p3, _, err := rootOverlay(ctx, img, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := checkOverlayTemplate(p3, img, 1<<20); err != nil {
		t.Fatalf("overlay after a bad template: %v", err)
	}
}
