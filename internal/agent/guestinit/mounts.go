package guestinit

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// mountSpec is one filesystem the init mounts.
type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	mode                   os.FileMode // for the target directory
}

// isMountpoint reports whether dir is on a different device than its parent
// (enough for the pseudo filesystems the init cares about).
func isMountpoint(dir string) bool {
	var st, parent unix.Stat_t
	if unix.Stat(dir, &st) != nil || unix.Stat(filepath.Join(dir, ".."), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev || st.Ino == parent.Ino
}

// mount mounts m unless something is already mounted there.
func (m mountSpec) mount() error {
	if err := os.MkdirAll(m.target, cmpMode(m.mode)); err != nil {
		return fmt.Errorf("mkdir %s: %w", m.target, err)
	}
	if isMountpoint(m.target) {
		return nil
	}
	if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
	}
	return nil
}

func cmpMode(m os.FileMode) os.FileMode {
	if m == 0 {
		return 0o755
	}
	return m
}

const pseudoFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

var (
	mountDev  = mountSpec{source: "devtmpfs", target: "/dev", fstype: "devtmpfs", flags: unix.MS_NOSUID, data: "mode=0755"}
	mountProc = mountSpec{source: "proc", target: "/proc", fstype: "proc", flags: pseudoFlags}
	mountSys  = mountSpec{source: "sysfs", target: "/sys", fstype: "sysfs", flags: pseudoFlags}
)

// rootfsMounts is what a booted system expects beyond /dev /proc /sys.
var rootfsMounts = []mountSpec{
	{source: "devpts", target: "/dev/pts", fstype: "devpts", flags: unix.MS_NOSUID | unix.MS_NOEXEC, data: "gid=5,mode=0620,ptmxmode=0666"},
	{source: "tmpfs", target: "/dev/shm", fstype: "tmpfs", flags: pseudoFlags, data: "mode=1777", mode: 0o1777},
	{source: "tmpfs", target: "/run", fstype: "tmpfs", flags: unix.MS_NOSUID | unix.MS_NODEV, data: "mode=0755"},
	{source: "tmpfs", target: "/tmp", fstype: "tmpfs", flags: unix.MS_NOSUID | unix.MS_NODEV, data: "mode=1777", mode: 0o1777},
}

// mountSource returns the source of the filesystem mounted at target, from
// /proc/self/mounts (for the health detail).
func mountSource(target string) string {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return ""
	}
	defer f.Close()
	src := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 3 && fs[1] == target {
			src = fs[0] + " (" + fs[2] + ")" // last one wins: the top mount
		}
	}
	return src
}

// mountTargets lists mount points, in mount order.
func mountTargets() []string {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) >= 2 {
			out = append(out, fs[1])
		}
	}
	return out
}
