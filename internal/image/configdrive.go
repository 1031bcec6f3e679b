package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// configDriveSize is small: the config is at most guestcfg.MaxSize.
const configDriveSize = 4 << 20

// WriteConfigDrive writes cfg's config drive in format: guestcfg.DriveFormat
// (the config straight on the disk: no mkfs, no subprocess, ~1 ms) or ""
// for the ext4 drive agents before that format read. path is replaced
// atomically and is 0600 (the drive holds the guest's private key).
func WriteConfigDrive(ctx context.Context, path string, cfg *guestcfg.Config, format string) error {
	switch format {
	case guestcfg.DriveFormat:
		return writeRawConfigDrive(path, cfg)
	case "":
		return writeExt4ConfigDrive(ctx, path, cfg)
	}
	return fmt.Errorf("config drive: unknown format %q", format)
}

// writeRawConfigDrive writes guestcfg.EncodeDrive's bytes, padded (sparse)
// to the ext4 drive's size so every VM's machine has the same disks and a
// snapshot restores onto a placeholder of that size.
func writeRawConfigDrive(path string, cfg *guestcfg.Config) error {
	data, err := guestcfg.EncodeDrive(cfg)
	if err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".config-drive-")
	if err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the rename: nothing
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("config drive: %w", err)
	}
	if err := f.Truncate(configDriveSize); err != nil {
		f.Close()
		return fmt.Errorf("config drive: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	// No fsync: the drive is rewritten on every boot and worthless after a
	// host crash, which also ends the VM that would read it.
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	return nil
}

// writeExt4ConfigDrive writes a small ext4 image labelled
// guestcfg.ConfigLabel holding /mvm.json. The filesystem carries the ext4
// read-only feature, so the guest kernel mounts it read-only whatever the
// mount flags say. Needs no root and no loop devices.
func writeExt4ConfigDrive(ctx context.Context, path string, cfg *guestcfg.Config) error {
	data, err := cfg.Encode()
	if err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	if len(data) > guestcfg.MaxSize {
		return fmt.Errorf("config drive: config is %d bytes, limit %d", len(data), guestcfg.MaxSize)
	}
	tune2fs, err := lookTool("tune2fs", "e2fsprogs")
	if err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	dir := filepath.Dir(path)
	work, err := os.MkdirTemp(dir, ".config-drive-")
	if err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	defer os.RemoveAll(work)
	stage := filepath.Join(work, "stage")
	if err := os.Mkdir(stage, 0o755); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	if err := os.WriteFile(filepath.Join(stage, guestcfg.FileName), data, 0o444); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	sum := sha256.Sum256(data)
	img := filepath.Join(work, "config.ext4")
	err = makeExt4(ctx, mkfsSpec{
		Dir:      stage,
		Out:      img,
		Label:    guestcfg.ConfigLabel,
		UUID:     uuidFrom(hex.EncodeToString(sum[:])),
		Size:     configDriveSize,
		Features: "^has_journal",
	})
	if err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	// mke2fs refuses the read-only feature at creation; tune2fs can set it.
	if err := run(ctx, append(os.Environ(), "LC_ALL=C"), tune2fs, "-O", "read-only", img); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	if err := sealFile(img); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	if err := os.Rename(img, path); err != nil {
		return fmt.Errorf("config drive: %w", err)
	}
	return nil
}

// WriteConfigPlaceholder writes an empty, sparse disk of the config drive's
// size. A VM restored from a snapshot needs a disk in the config drive's
// slot (the machine must match the saved one) but never reads it: its guest
// consumed its config before the snapshot and learns its new identity
// through the agent's post-restore call. Skipping mkfs keeps restores fast.
func WriteConfigPlaceholder(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("config placeholder: %w", err)
	}
	if err := f.Truncate(configDriveSize); err != nil {
		f.Close()
		return fmt.Errorf("config placeholder: %w", err)
	}
	return f.Close()
}
