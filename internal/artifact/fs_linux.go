//go:build linux

package artifact

import (
	"errors"
	"os"
	"syscall"

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

// statID is what identifies a file's version for the pack memo: which
// inode it is and everything a write, truncate, chmod or replacement
// changes. ctime is in it because no utility can set it back, unlike
// mtime.
func statID(fi os.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{
		Dev:   uint64(st.Dev), // uint32 on some architectures
		Ino:   uint64(st.Ino),
		Mode:  uint32(st.Mode),
		Size:  st.Size,
		Mtime: st.Mtim.Nano(),
		Ctime: st.Ctim.Nano(),
	}, true
}

// startWriteback asks the kernel to begin writing [off, off+n) of f to
// disk, so the fsync that makes a pulled file durable finds most of it
// written already. It does not wait for the writes, but may wait for room
// in a busy disk's queue.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
