package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/mvm-dev/mvm/internal/paths"
)

// rootOverlay makes the VM's own writable root disk from the cached image,
// which is never attached itself. qcow2 with a backing file is instant; without
// qemu-img (Debian package qemu-utils) a reflink-or-copy is the fallback.
func rootOverlay(ctx context.Context, image, dir string) (path, format string, err error) {
	abs, err := filepath.Abs(image)
	if err != nil {
		return "", "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return "", "", fmt.Errorf("root image: %w", err)
	}
	if qimg, lerr := exec.LookPath("qemu-img"); lerr == nil {
		path = filepath.Join(dir, "root.qcow2")
		tpl, err := overlayTemplate(ctx, qimg, abs)
		if err == nil {
			// An empty overlay is the same bytes for every VM of an image: a
			// copy of one qemu-img made once saves a process per boot.
			if err = copyFile(tpl, path); err == nil {
				return path, "qcow2", nil
			}
		}
		slog.Debug("overlay template unusable; running qemu-img", "image", abs, "err", err)
		os.Remove(path)
		if err := qemuImgOverlay(ctx, qimg, abs, path); err != nil {
			return "", "", err
		}
		return path, "qcow2", nil
	}
	slog.Debug("qemu-img not found (install qemu-utils); copying the root image instead of a qcow2 overlay", "image", abs)
	path = filepath.Join(dir, "root.img")
	os.Remove(path)
	out, err := exec.CommandContext(ctx, "cp", "--reflink=auto", "--sparse=always", abs, path).CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("copy root image: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return "", "", err
	}
	return path, "raw", nil
}

func qemuImgOverlay(ctx context.Context, qimg, backing, path string) error {
	out, err := exec.CommandContext(ctx, qimg, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing, path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img create overlay: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// overlayTemplateMax bounds a template's size: an empty overlay is a few
// clusters, anything bigger is not one.
const overlayTemplateMax = 1 << 20

// overlayTemplate returns an empty qcow2 overlay of image kept under the
// cache's overlays directory, made with qemu-img the first time.
func overlayTemplate(ctx context.Context, qimg, image string) (string, error) {
	fi, err := os.Stat(image)
	if err != nil {
		return "", err
	}
	d, err := paths.Resolve()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(image))
	tpl := filepath.Join(d.Cache, "overlays", hex.EncodeToString(sum[:12])+".qcow2")
	if err := checkOverlayTemplate(tpl, image, fi.Size()); err == nil {
		return tpl, nil
	}
	if err := os.MkdirAll(filepath.Dir(tpl), 0o700); err != nil {
		return "", err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", tpl, os.Getpid())
	os.Remove(tmp)
	if err := qemuImgOverlay(ctx, qimg, image, tmp); err != nil {
		return "", err
	}
	defer os.Remove(tmp)
	if err := checkOverlayTemplate(tmp, image, fi.Size()); err != nil {
		return "", fmt.Errorf("new overlay template: %w", err)
	}
	return tpl, os.Rename(tmp, tpl)
}

// checkOverlayTemplate verifies that path is a small qcow2 image of size
// bytes backed by backing (the header fields qemu-img wrote), so a stale or
// foreign file is never copied in as a VM's disk.
func checkOverlayTemplate(path, backing string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Size() > overlayTemplateMax {
		return fmt.Errorf("%s: not a small regular file", path)
	}
	var h [32]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return fmt.Errorf("%s: qcow2 header: %w", path, err)
	}
	if string(h[:4]) != "QFI\xfb" {
		return fmt.Errorf("%s: not qcow2", path)
	}
	off, n := binary.BigEndian.Uint64(h[8:]), binary.BigEndian.Uint32(h[16:])
	if got := int64(binary.BigEndian.Uint64(h[24:])); got != size {
		return fmt.Errorf("%s: virtual size %d, image has %d", path, got, size)
	}
	if n != uint32(len(backing)) || off == 0 || off+uint64(n) > uint64(fi.Size()) {
		return fmt.Errorf("%s: backing file name does not match", path)
	}
	name := make([]byte, n)
	if _, err := f.ReadAt(name, int64(off)); err != nil || string(name) != backing {
		return fmt.Errorf("%s: backing file is %q, want %q", path, name, backing)
	}
	return nil
}
