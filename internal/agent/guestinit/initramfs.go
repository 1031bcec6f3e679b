package guestinit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// Initramfs layout, shared with internal/image.
const (
	ModulesList = "/etc/mvm/modules"
	ModulesDir  = "/lib/modules"
	NewRoot     = "/newroot"
	// RootAgent is exec'd as PID 1 once the root disk is mounted.
	RootAgent = "/sbin/mvm-agent"
)

// RootWait bounds the search for the root disk.
const RootWait = 30 * time.Second

// fatalPause keeps the last console lines visible before the VM goes away.
const fatalPause = 2 * time.Second

// InInitramfs reports whether this PID 1 runs from the initramfs: the root
// is ramfs/tmpfs and carries the module list.
func InInitramfs() bool {
	var st unix.Statfs_t
	if unix.Statfs("/", &st) != nil {
		return false
	}
	if st.Type != unix.RAMFS_MAGIC && st.Type != unix.TMPFS_MAGIC {
		return false
	}
	_, err := os.Stat(ModulesList)
	return err == nil
}

// Fatal prints which stage failed, waits a moment and restarts the machine;
// QEMU runs with -no-reboot, so the VM exits and the host sees it.
func Fatal(c *Console, stage string, err error) {
	c.Printf("FATAL: %s: %v", stage, err)
	c.Printf("restarting (the VM exits when run with -no-reboot)")
	time.Sleep(fatalPause)
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	// Reboot only returns on error (not PID 1, no CAP_SYS_BOOT).
	os.Exit(1)
}

// Initramfs runs the initramfs stage and execs the root's agent. It returns
// nil when the root's agent is this very binary (the caller then carries on
// as it: Rootfs), and otherwise only on failure, naming the stage.
func Initramfs(c *Console) (stage string, err error) {
	stage = "mount /dev /proc /sys"
	for _, m := range []mountSpec{mountDev, mountProc, mountSys} {
		if err := m.mount(); err != nil {
			return stage, err
		}
	}
	c.Reopen()
	c.Printf("initramfs: loading modules")

	stage = "load modules"
	failed, err := loadModules(c, ModulesList, ModulesDir)
	if err != nil {
		return stage, err
	}

	stage = "find root disk"
	ctx, cancel := context.WithTimeout(context.Background(), RootWait)
	dev, err := realBlockDirs.waitForLabel(ctx, guestcfg.RootLabel)
	cancel()
	if err != nil {
		if len(failed) > 0 {
			err = fmt.Errorf("%w (modules that failed to load: %s)", err, strings.Join(failed, ", "))
		}
		return stage, err
	}
	c.Printf("root disk %s", dev)

	stage = "mount root disk"
	if err := os.MkdirAll(NewRoot, 0o755); err != nil {
		return stage, err
	}
	if err := unix.Mount(dev, NewRoot, "ext4", 0, ""); err != nil {
		return stage, fmt.Errorf("mount %s ext4 on %s: %w", dev, NewRoot, err)
	}
	if _, err := os.Stat(NewRoot + RootAgent); err != nil {
		return stage, fmt.Errorf("root disk has no agent: %w", err)
	}

	stage = "move /dev /proc /sys"
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		target := NewRoot + d
		if err := os.MkdirAll(target, 0o755); err != nil {
			return stage, err
		}
		if err := unix.Mount(d, target, "", unix.MS_MOVE, ""); err != nil {
			return stage, fmt.Errorf("move %s: %w", d, err)
		}
	}

	stage = "free initramfs"
	if err := freeInitramfs(); err != nil {
		// Only memory is lost; carry on.
		c.Printf("freeing initramfs: %v", err)
	}

	stage = "switch root"
	if err := switchRoot(NewRoot); err != nil {
		return stage, err
	}
	if sameAgent("/proc/self/exe", RootAgent) {
		// Its /init stays in RAM (mapped, so not freed): a few MiB for over
		// a second of boot under TCG.
		c.Printf("switched to root disk; %s is this agent: continuing without exec", RootAgent)
		return "", nil
	}
	c.Printf("switched to root disk; starting %s", RootAgent)
	stage = "exec " + RootAgent
	return stage, unix.Exec(RootAgent, []string{RootAgent}, os.Environ())
}

// switchRoot makes dir the root: chdir, move it over /, chroot.
func switchRoot(dir string) error {
	if err := unix.Chdir(dir); err != nil {
		return fmt.Errorf("chdir %s: %w", dir, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s to /: %w", dir, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return unix.Chdir("/")
}

// freeInitramfs deletes the initramfs contents (its RAM is not returned
// otherwise), refusing to run unless / really is ramfs/tmpfs and never
// descending into another filesystem such as the new root.
func freeInitramfs() error {
	var sfs unix.Statfs_t
	if err := unix.Statfs("/", &sfs); err != nil {
		return err
	}
	if sfs.Type != unix.RAMFS_MAGIC && sfs.Type != unix.TMPFS_MAGIC {
		return errors.New("/ is not an initramfs; not deleting anything")
	}
	var root unix.Stat_t
	if err := unix.Lstat("/", &root); err != nil {
		return err
	}
	return removeSameDev("/", root.Dev, NewRoot)
}

// removeSameDev removes dir's entries that live on device dev, skipping
// keep and anything mounted elsewhere. dir itself is not removed.
func removeSameDev(dir string, dev uint64, keep string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if p == keep {
			continue
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Dev != dev {
			continue // a mount point: not ours to delete
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := removeSameDev(p, dev, keep); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := unix.Rmdir(p); err != nil && !errors.Is(err, unix.EBUSY) {
				errs = append(errs, err)
			}
			continue
		}
		if err := unix.Unlink(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
