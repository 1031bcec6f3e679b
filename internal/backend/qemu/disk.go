package qemu

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
		os.Remove(path)
		out, err := exec.CommandContext(ctx, qimg, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", abs, path).CombinedOutput()
		if err != nil {
			return "", "", fmt.Errorf("qemu-img create overlay: %w: %s", err, strings.TrimSpace(string(out)))
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
