package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// rootfsMountDir is where disks named by ExecRequest.Rootfs are mounted.
const rootfsMountDir = "/run/mvm/rootfs"

// rootfsMu serialises mounting, so two execs into one new container root
// do not both mount it.
var rootfsMu sync.Mutex

// rootfs resolves ExecRequest.Rootfs to a directory to chroot into,
// mounting a labelled disk (and the pseudo filesystems a process expects
// inside it) the first time it is named.
func (s *Server) rootfs(spec string) (string, error) {
	label, isLabel := strings.CutPrefix(spec, "LABEL=")
	if !isLabel {
		if !filepath.IsAbs(spec) || filepath.Clean(spec) == "/" {
			return "", errors.New("must be LABEL=NAME or an absolute directory other than /")
		}
		fi, err := os.Stat(spec)
		if err != nil {
			return "", err
		}
		if !fi.IsDir() {
			return "", errors.New("not a directory")
		}
		return filepath.Clean(spec), nil
	}
	if !validLabel(label) {
		return "", errors.New("label must be 1-16 characters of [A-Za-z0-9._-]")
	}
	rootfsMu.Lock()
	defer rootfsMu.Unlock()
	dir := filepath.Join(rootfsMountDir, label)
	if mounted(dir) {
		return dir, nil
	}
	dev, err := findExt4Label("/sys/class/block", "/dev", label)
	if err != nil {
		return "", fmt.Errorf("no disk labelled %q: %w", label, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	err = unix.Mount(dev, dir, "ext4", 0, "")
	if errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES) {
		// A disk attached read-only (a read-only container root).
		err = unix.Mount(dev, dir, "ext4", unix.MS_RDONLY, "noload")
	}
	if err != nil {
		return "", fmt.Errorf("mount %s on %s: %w", dev, dir, err)
	}
	for _, m := range []struct {
		src, target, fstype string
		flags               uintptr
	}{
		{"proc", "proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sysfs", "sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RDONLY},
		{"/dev", "dev", "", unix.MS_BIND | unix.MS_REC},
	} {
		t := filepath.Join(dir, m.target)
		if err := os.MkdirAll(t, 0o755); err != nil {
			return "", fmt.Errorf("rootfs %s: %w", m.target, err)
		}
		if err := unix.Mount(m.src, t, m.fstype, m.flags, ""); err != nil {
			return "", fmt.Errorf("mount %s in rootfs: %w", m.target, err)
		}
	}
	return dir, nil
}

func validLabel(l string) bool {
	if l == "" || len(l) > 16 {
		return false
	}
	for _, c := range l {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// mounted reports whether dir is a mount point (another device than its
// parent's).
func mounted(dir string) bool {
	var st, parent unix.Stat_t
	if unix.Stat(dir, &st) != nil || unix.Stat(filepath.Join(dir, ".."), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// findExt4Label returns the block device whose ext4 volume label is label.
func findExt4Label(sysClassBlock, devDir, label string) (string, error) {
	ents, err := os.ReadDir(sysClassBlock)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		dev := filepath.Join(devDir, e.Name())
		f, err := os.Open(dev)
		if err != nil {
			continue // a device we cannot read
		}
		got, err := ext4Label(f)
		f.Close()
		if err == nil && got == label {
			return dev, nil
		}
	}
	return "", os.ErrNotExist
}

// ext4Label reads the volume label from an ext2/3/4 superblock (1024 bytes
// in: magic at +56, label at +120, 16 bytes NUL-padded).
func ext4Label(r io.ReaderAt) (string, error) {
	var sb [136]byte
	if _, err := r.ReadAt(sb[:], 1024); err != nil {
		return "", err
	}
	if binary.LittleEndian.Uint16(sb[56:]) != 0xEF53 {
		return "", errors.New("no ext4 superblock")
	}
	l := sb[120:136]
	if i := strings.IndexByte(string(l), 0); i >= 0 {
		l = l[:i]
	}
	return string(l), nil
}
