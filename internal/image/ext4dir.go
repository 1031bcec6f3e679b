package image

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
)

// Ext4FromDir writes out, a new ext4 filesystem labelled label holding a
// copy of the tree under dir (owners and modes kept), with free bytes of
// room to spare for what the guest writes. It returns the image's size.
// Unlike image builds it is not reproducible: a container's rootfs is
// built per container and thrown away with it.
func Ext4FromDir(ctx context.Context, dir, out, label string, free int64) (int64, error) {
	var used int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		used += 4096 // inode table share, directory block or small file
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			used += (fi.Size() + 4095) &^ 4095
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("size %s: %w", dir, err)
	}
	// ext4 metadata and journal: ~10% plus a floor for the journal.
	size := used + used/10 + free + 32<<20
	size = (size + 4095) &^ 4095
	if err := makeExt4(ctx, mkfsSpec{Dir: dir, Out: out, Label: label, Size: size}); err != nil {
		return 0, err
	}
	return size, nil
}
