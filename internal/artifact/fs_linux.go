//go:build linux

package artifact

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// isHole reports whether [off, off+n) of f holds no data at all, asked of
// the filesystem (SEEK_DATA) without reading: a RAM file's untouched pages
// are holes and need neither reading nor compressing. Filesystems without
// hole support report everything as data, which is merely slower.
func isHole(f *os.File, off, n int64) bool {
	next, err := f.Seek(off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return true // no data from off to the end
	}
	return err == nil && next >= off+n
}

// renameNoReplace moves a directory into place unless something is already
// there, atomically where the filesystem can.
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		return renameChecked(from, to)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}
