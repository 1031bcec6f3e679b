//go:build !linux

package artifact

import "os"

// isHole without SEEK_DATA: treat everything as data.
func isHole(*os.File, int64, int64) bool { return false }

func renameNoReplace(from, to string) error { return renameChecked(from, to) }

// statID without a portable inode and ctime: no memo, every push packs.
func statID(os.FileInfo) (fileID, bool) { return fileID{}, false }

func startWriteback(*os.File, int64, int64) {}
