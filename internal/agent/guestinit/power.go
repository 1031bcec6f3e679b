package guestinit

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// termGrace is how long processes get between SIGTERM and SIGKILL.
const termGrace = 3 * time.Second

var powerOnce sync.Once

// PowerOff stops every process, unmounts, and restarts the machine. It uses
// RESTART for power-off too: on QEMU microvm there is no ACPI, so POWER_OFF
// would halt without exiting, while the host runs QEMU with -no-reboot and
// the kernel with reboot=t, which turns a restart into QEMU exiting. reboot
// is accepted for the day a backend distinguishes the two.
func PowerOff(c *Console, reboot bool) {
	powerOnce.Do(func() {
		c.Printf("shutting down (reboot=%v)", reboot)
		_ = unix.Kill(-1, unix.SIGTERM) // everyone but PID 1
		deadline := time.Now().Add(termGrace)
		for userProcesses() > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if n := userProcesses(); n > 0 {
			c.Printf("%d processes ignored SIGTERM; killing", n)
			_ = unix.Kill(-1, unix.SIGKILL)
			time.Sleep(100 * time.Millisecond)
		}
		unix.Sync()
		unmountAll(c)
		unix.Sync()
		c.Printf("restarting")
		if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
			c.Printf("reboot: %v", err)
		}
	})
}

// userProcesses counts live processes other than us; kernel threads and
// zombies have an empty cmdline. (kill(-1, 0) cannot tell: it counts kthreads.)
func userProcesses() int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := os.Getpid()
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && len(b) > 0 {
			n++
		}
	}
	return n
}

// unmountAll unmounts everything but the pseudo filesystems, newest first,
// then remounts / read-only so the root disk is clean.
func unmountAll(c *Console) {
	targets := mountTargets()
	for i := len(targets) - 1; i >= 0; i-- {
		switch t := targets[i]; t {
		case "/", "/proc", "/sys", "/dev":
		default:
			if err := unix.Unmount(t, 0); err != nil && err != unix.EINVAL && err != unix.ENOENT {
				_ = unix.Unmount(t, unix.MNT_DETACH)
			}
		}
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		c.Printf("remount / read-only: %v", err)
	}
}
