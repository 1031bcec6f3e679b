package guestinit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// ext4 superblock: 1024 bytes in; magic at +56, volume label at +120 (16 bytes).
const (
	sbOffset    = 1024
	sbMagicOff  = 56
	sbLabelOff  = 120
	sbLabelLen  = 16
	ext4Magic   = 0xEF53
	sbReadBytes = sbLabelOff + sbLabelLen
)

// ErrNotExt4 means the device has no ext2/3/4 superblock.
var ErrNotExt4 = errors.New("no ext2/3/4 superblock")

// ReadExt4Label returns the volume label of the ext2/3/4 filesystem in r.
func ReadExt4Label(r io.ReaderAt) (string, error) {
	var sb [sbReadBytes]byte
	if _, err := r.ReadAt(sb[:], sbOffset); err != nil {
		if errors.Is(err, io.EOF) {
			return "", ErrNotExt4
		}
		return "", err
	}
	if binary.LittleEndian.Uint16(sb[sbMagicOff:]) != ext4Magic {
		return "", ErrNotExt4
	}
	label := sb[sbLabelOff : sbLabelOff+sbLabelLen]
	for i, c := range label {
		if c == 0 {
			label = label[:i]
			break
		}
	}
	return string(label), nil
}

// blockDirs names where block devices are listed and where their nodes live.
type blockDirs struct {
	sysClassBlock string // /sys/class/block
	dev           string // /dev
}

var realBlockDirs = blockDirs{sysClassBlock: "/sys/class/block", dev: "/dev"}

// findLabel scans every block device once for an ext4 label.
func (d blockDirs) findLabel(label string) (string, error) {
	ents, err := os.ReadDir(d.sysClassBlock)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		dev := filepath.Join(d.dev, e.Name())
		f, err := os.Open(dev)
		if err != nil {
			continue // node not created yet, or a device we cannot read
		}
		got, err := ReadExt4Label(f)
		f.Close()
		if err == nil && got == label {
			return dev, nil
		}
	}
	return "", os.ErrNotExist
}

// waitForLabel polls until a device labelled label appears or ctx ends;
// virtio devices are probed asynchronously after their modules load.
func (d blockDirs) waitForLabel(ctx context.Context, label string) (string, error) {
	for {
		dev, err := d.findLabel(label)
		if err == nil {
			return dev, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no block device with ext4 label %q: %w", label, ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// findConfigDrive scans every block device once for the config drive: the
// raw format (guestcfg.DriveFormat) or, from hosts before it, an ext4
// filesystem labelled guestcfg.ConfigLabel.
func (d blockDirs) findConfigDrive() (dev string, raw bool, err error) {
	ents, err := os.ReadDir(d.sysClassBlock)
	if err != nil {
		return "", false, err
	}
	for _, e := range ents {
		dev := filepath.Join(d.dev, e.Name())
		f, err := os.Open(dev)
		if err != nil {
			continue
		}
		isRaw := guestcfg.IsDrive(f)
		label, lerr := "", error(nil)
		if !isRaw {
			label, lerr = ReadExt4Label(f)
		}
		f.Close()
		if isRaw || (lerr == nil && label == guestcfg.ConfigLabel) {
			return dev, isRaw, nil
		}
	}
	return "", false, os.ErrNotExist
}

// waitForConfigDrive polls findConfigDrive until it finds one or ctx ends.
func (d blockDirs) waitForConfigDrive(ctx context.Context) (dev string, raw bool, err error) {
	for {
		dev, raw, err := d.findConfigDrive()
		if err == nil {
			return dev, raw, nil
		}
		select {
		case <-ctx.Done():
			return "", false, fmt.Errorf("no config drive (raw, or ext4 labelled %q): %w", guestcfg.ConfigLabel, ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}
