//go:build linux

package shim

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/containerd/api/types"
	"golang.org/x/sys/unix"
)

// mountFlags are the mount(8) options that are flags, not data; the bool
// says the option clears the flag.
var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"bind": {false, unix.MS_BIND}, "rbind": {false, unix.MS_BIND | unix.MS_REC},
	"nosuid": {false, unix.MS_NOSUID}, "suid": {true, unix.MS_NOSUID},
	"nodev": {false, unix.MS_NODEV}, "dev": {true, unix.MS_NODEV},
	"noexec": {false, unix.MS_NOEXEC}, "exec": {true, unix.MS_NOEXEC},
	"sync": {false, unix.MS_SYNCHRONOUS}, "async": {true, unix.MS_SYNCHRONOUS},
	"noatime": {false, unix.MS_NOATIME}, "atime": {true, unix.MS_NOATIME},
	"relatime": {false, unix.MS_RELATIME}, "norelatime": {true, unix.MS_RELATIME},
	"nodiratime": {false, unix.MS_NODIRATIME}, "diratime": {true, unix.MS_NODIRATIME},
	"strictatime": {false, unix.MS_STRICTATIME},
	"defaults":    {false, 0},
}

// parseMountOptions splits options into mount flags and the data string.
func parseMountOptions(opts []string) (uintptr, string) {
	var flags uintptr
	var data []string
	for _, o := range opts {
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		data = append(data, o)
	}
	return flags, strings.Join(data, ",")
}

// mountAll mounts containerd's rootfs mounts, in order, on target.
func mountAll(ms []*types.Mount, target string) error {
	if err := os.MkdirAll(target, 0o711); err != nil {
		return fmt.Errorf("rootfs dir: %w", err)
	}
	for i, m := range ms {
		flags, data := parseMountOptions(m.Options)
		if len(data) > unix.Getpagesize() {
			return fmt.Errorf("mount %s: options longer than a page", m.Type)
		}
		bind := flags&unix.MS_BIND != 0
		typ, first := m.Type, flags
		if bind {
			// A bind mount ignores MS_RDONLY: it takes a remount.
			typ, first = "", flags&^unix.MS_RDONLY
		}
		if err := unix.Mount(m.Source, target, typ, first, data); err != nil {
			_ = unmountAll(target)
			return fmt.Errorf("mount %d (%s %s) on %s: %w", i, m.Type, m.Source, target, err)
		}
		if bind && flags&unix.MS_RDONLY != 0 {
			if err := unix.Mount("", target, "", flags|unix.MS_REMOUNT, ""); err != nil {
				_ = unmountAll(target)
				return fmt.Errorf("remount %s read-only: %w", target, err)
			}
		}
	}
	return nil
}

// unmountAll unmounts everything stacked on target; nothing mounted is no
// error.
func unmountAll(target string) error {
	for range 16 {
		err := unix.Unmount(target, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted after 16 unmounts", target)
}
