//go:build linux

package supervisor

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// guardPidfd is the guard's descriptor of the VMM's pidfd; guardReady is
// the pipe it closes once it watches for the supervisor's death.
const (
	guardPidfd = 3
	guardReady = 4
)

// guardDeathSig is the guard's parent-death signal. Its default action is
// to be ignored, so one that lands while the guard's runtime starts, before
// it listens, is not the end of the guard (SIGTERM's default would kill it
// and leave the VMM running); the guard looks at its parent once it
// listens, which catches a death it did not hear of.
const guardDeathSig = syscall.SIGWINCH

// guardReadyTimeout bounds the wait for a guard to say it listens.
const guardReadyTimeout = 10 * time.Second

// startGuard starts the guard of the VMM with the given pid, the
// supervisor's child, and waits until it listens for signals: before that a
// stray SIGTERM would end it. It must run on the thread that must not die
// without the VMM dying too (the supervisor's locked main thread): a
// parent-death signal follows the thread that forked, not the process.
func startGuard(vmmPid int, log *slog.Logger) (*exec.Cmd, error) {
	// pidfd_open on our own unreaped child cannot name another process.
	fd, err := unix.PidfdOpen(vmmPid, 0)
	if err != nil {
		return nil, fmt.Errorf("vmm guard: pidfd_open %d: %w", vmmPid, err)
	}
	pidfd := os.NewFile(uintptr(fd), "vmm-pidfd")
	defer pidfd.Close()
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("vmm guard: %w", err)
	}
	defer rd.Close()
	// /proc/self/exe: the running binary, even if it was replaced on disk.
	cmd := exec.Command("/proc/self/exe", Arg, guardArg, strconv.Itoa(os.Getpid()))
	cmd.ExtraFiles = []*os.File{pidfd, wr}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = childAttr(guardDeathSig)
	err = cmd.Start()
	wr.Close()
	if err != nil {
		return nil, fmt.Errorf("vmm guard: %w", err)
	}
	// The guard closes its end when it listens (or when it exits): EOF
	// either way. It keeps guarding if this wait runs out.
	_ = rd.SetReadDeadline(time.Now().Add(guardReadyTimeout))
	if _, err := rd.Read(make([]byte, 1)); err != nil && !errors.Is(err, io.EOF) {
		log.Warn("vmm guard: no word that it listens", "pid", cmd.Process.Pid, "err", err)
	}
	log.Info("vmm guard started", "pid", cmd.Process.Pid, "vmm", vmmPid)
	return cmd, nil
}

// runGuard is the guard's main: it waits until the VMM exits, or until the
// supervisor (pid parent) is gone, and then kills the VMM.
func runGuard(args []string, log *slog.Logger) int {
	if len(args) != 1 {
		log.Error("usage: " + Arg + " " + guardArg + " <supervisor-pid>")
		return 2
	}
	parent, err := strconv.Atoi(args[0])
	if err != nil {
		log.Error("vmm guard: supervisor pid", "err", err)
		return 2
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, guardDeathSig, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	// Listening: the supervisor may go on (see startGuard).
	unix.Close(guardReady)
	kill := func() int {
		err := unix.PidfdSendSignal(guardPidfd, unix.SIGKILL, nil, 0)
		if err != nil && !errors.Is(err, unix.ESRCH) {
			log.Error("vmm guard: kill the vmm", "err", err)
			return 1
		}
		log.Warn("vmm guard: the supervisor died; vmm killed")
		return 0
	}
	// The supervisor may have died before our parent-death signal was set.
	if os.Getppid() != parent {
		return kill()
	}
	exited := make(chan error, 1)
	go func() { exited <- waitPidfd(guardPidfd) }()
	for {
		select {
		case err := <-exited:
			if err != nil {
				log.Error("vmm guard: wait for the vmm", "err", err)
				return 1
			}
			return 0
		case sig := <-sigs:
			if os.Getppid() == parent {
				// A stray signal, not the supervisor's death.
				log.Warn("vmm guard: ignoring a signal while the supervisor runs", "signal", sig.String())
				continue
			}
			return kill()
		}
	}
}

// waitPidfd blocks until the process of pidfd has exited.
func waitPidfd(fd int) error {
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll pidfd: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}
