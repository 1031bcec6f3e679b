package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/qmp"
)

// Grace periods when the supervisor is told to stop.
const (
	quitGrace = 10 * time.Second // after QMP quit
	termGrace = 3 * time.Second  // after SIGTERM to the VMM
)

// Main runs the supervisor for the VM directory args[0] and returns the
// process exit code. Logs go to stderr, which Launch points at LogFile.
func Main(args []string) int {
	// Keep the long-lived process small: it holds a few buffers at most.
	debug.SetGCPercent(50)
	syscall.Umask(0o077)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if len(args) > 0 && args[0] == guardArg {
		return runGuard(args[1:], log)
	}
	if len(args) != 1 {
		log.Error("usage: " + Arg + " <vm-dir>")
		return 2
	}
	if err := run(args[0], log); err != nil {
		log.Error("supervisor failed", "err", err)
		return 1
	}
	return 0
}

func run(dir string, log *slog.Logger) error {
	var cfg Config
	if err := readJSON(filepath.Join(dir, ConfigFile), &cfg); err != nil {
		return err
	}
	if len(cfg.Argv) == 0 {
		return errors.New("config has no VMM command line")
	}
	self, err := ReadProc(os.Getpid())
	if err != nil {
		return err
	}
	pids := Pids{Supervisor: self}
	if err := writeJSON(filepath.Join(dir, PidsFile), pids); err != nil {
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)

	// Pdeathsig fires when the thread that forked the child exits, not the
	// process; pin this goroutine to its thread for the supervisor's life.
	runtime.LockOSThread()
	// Whether the VMM ran or never started, nothing it or we served stays.
	cleanup := func() {
		socks := append([]string{cfg.AgentSock, cfg.SerialSock, cfg.QMPSocket, cfg.ConsoleSock}, cfg.Listen...)
		for _, s := range append(socks, cfg.Remove...) {
			if s != "" {
				os.Remove(s)
			}
		}
	}
	failed := func(err error) error {
		cleanup()
		writeJSON(filepath.Join(dir, ExitFile), Exit{Code: -1, Error: err.Error(), Time: time.Now()})
		return err
	}
	// Published ports are bound before the VMM starts: a port taken fails
	// the start as plainly as a VMM that cannot run.
	pub, err := bindPublish(cfg.Publish, log)
	if err != nil {
		return failed(err)
	}
	helperEnds, stopHelpers, err := startHelpers(cfg.Helpers, log)
	if err != nil {
		pub.close()
		return failed(err)
	}
	listeners, err := listenAll(cfg.Listen)
	if err != nil {
		pub.close()
		stopHelpers()
		return failed(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Connect to the sockets QEMU will serve before it runs: our connections
	// wait in their backlogs, so QEMU (console: wait=on) finds its client at
	// once and the agent port has our SYNC queued.
	consoleDone := startConsole(cfg, ctx, log)
	if cfg.SerialSock != "" {
		r := &relay{serial: cfg.SerialSock, agent: cfg.AgentSock, log: log, ready: cfg.AgentReady}
		if err := r.listen(); err != nil {
			log.Error("agent relay disabled", "err", err)
		} else {
			go r.run(ctx)
		}
	}
	vmm, err := startVMM(cfg, append(listeners, helperEnds...))
	// QEMU holds its own copies now; the paths stay bound.
	for _, f := range append(listeners, helperEnds...) {
		f.Close()
	}
	if err != nil {
		cancel()
		consoleDone()
		pub.close()
		stopHelpers()
		return failed(err)
	}
	if cfg.VMMGuard {
		if guard, err := startGuard(vmm.Process.Pid, log); err != nil {
			log.Error("the vmm may outlive a killed supervisor", "err", err)
		} else {
			go guard.Wait()
		}
	}
	stopPublish := pub.serve(ctx)
	if pids.VMM, err = ReadProc(vmm.Process.Pid); err != nil {
		log.Warn("read vmm identity", "err", err) // it exited already; Wait reports how
		pids.VMM = Proc{Pid: vmm.Process.Pid}
	}
	if err := writeJSON(filepath.Join(dir, PidsFile), pids); err != nil {
		log.Warn("write pids", "err", err)
	}
	log.Info("vmm started", "pid", vmm.Process.Pid, "argv0", cfg.Argv[0])

	waited := make(chan error, 1)
	go func() { waited <- vmm.Wait() }()
	var werr error
	select {
	case werr = <-waited:
	case sig := <-sigs:
		log.Info("stopping vmm", "signal", sig.String())
		werr = stopVMM(cfg, pids.VMM, waited, log)
	}
	cancel()
	// Free the host ports before the exit is recorded, so a new start can
	// bind them at once.
	stopPublish()
	stopHelpers()
	consoleDone()
	ex := exitOf(vmm.ProcessState, werr)
	log.Info("vmm exited", "code", ex.Code, "signal", ex.Signal)
	cleanup()
	return writeJSON(filepath.Join(dir, ExitFile), ex)
}

// startConsole starts copying the guest console into its rotated log. The
// returned func, called once the VMM has exited (vmmGone done), waits a
// bounded time for the last output to be written.
func startConsole(cfg Config, vmmGone context.Context, log *slog.Logger) func() {
	if cfg.ConsoleSock == "" || cfg.ConsoleLog == "" {
		return func() {}
	}
	out, err := OpenRotator(cfg.ConsoleLog, cfg.ConsoleMax, true)
	if err != nil {
		// QEMU still waits for a client on the socket: connect and discard
		// rather than leave the guest unstarted.
		log.Error("console log unavailable; discarding console output", "err", err)
		out = nil
	}
	c := &console{sock: cfg.ConsoleSock, log: log}
	if out != nil {
		c.out = out
	} else {
		c.out = discard{}
	}
	hard, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.run(vmmGone, hard)
	}()
	return func() {
		t := time.AfterFunc(consoleDrain, stop)
		<-done
		t.Stop()
		stop()
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) Close() error                { return nil }

// startVMM starts the VMM with listeners as its descriptors 3, 4, ….
func startVMM(cfg Config, listeners []*os.File) (*exec.Cmd, error) {
	out, err := os.OpenFile(cfg.VMMLog, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open vmm log: %w", err)
	}
	defer out.Close()
	cmd := exec.Command(cfg.Argv[0], cfg.Argv[1:]...)
	cmd.ExtraFiles = listeners
	cmd.Stdout, cmd.Stderr = out, out
	// Own process group, so a signal meant for the supervisor's session
	// never reaches QEMU by accident and we can signal QEMU's group.
	cmd.SysProcAttr = childAttr(syscall.SIGKILL)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Argv[0], err)
	}
	return cmd, nil
}

// listenAll binds each path as a listening unix socket (mode 0600) and
// returns the descriptors to pass to the VMM, in order.
func listenAll(paths []string) ([]*os.File, error) {
	var files []*os.File
	fail := func(err error) ([]*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	for _, p := range paths {
		os.Remove(p) // stale from a VMM that ran here before
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
		if err != nil {
			return fail(fmt.Errorf("listen for the vmm: %w", err))
		}
		// Closing our listener must not unlink the path the VMM serves.
		ln.SetUnlinkOnClose(false)
		f, err := ln.File()
		ln.Close()
		if err == nil {
			err = os.Chmod(p, 0o600)
		}
		if err != nil {
			if f != nil {
				f.Close()
			}
			return fail(fmt.Errorf("listen for the vmm: %w", err))
		}
		files = append(files, f)
	}
	return files, nil
}

// stopVMM asks QEMU to quit over QMP, then escalates to SIGTERM and SIGKILL.
func stopVMM(cfg Config, vmm Proc, waited <-chan error, log *slog.Logger) error {
	if cfg.QMPSocket != "" && quitQMP(cfg.QMPSocket, log) {
		select {
		case err := <-waited:
			return err
		case <-time.After(quitGrace):
		}
	}
	if err := vmm.Signal(syscall.SIGTERM); err != nil {
		log.Warn("sigterm vmm", "err", err)
	}
	select {
	case err := <-waited:
		return err
	case <-time.After(termGrace):
	}
	if err := vmm.Signal(syscall.SIGKILL); err != nil {
		log.Warn("sigkill vmm", "err", err)
	}
	return <-waited
}

func exitOf(ps *os.ProcessState, werr error) Exit {
	ex := Exit{Time: time.Now().UTC()}
	if ps == nil {
		ex.Code = -1
		if werr != nil {
			ex.Error = werr.Error()
		}
		return ex
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		ex.Code = 128 + int(ws.Signal())
		ex.Signal = ws.Signal().String()
		return ex
	}
	ex.Code = ps.ExitCode()
	return ex
}

// quitQMP sends quit and reports whether QEMU got it.
func quitQMP(sock string, log *slog.Logger) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := qmp.Dial(ctx, sock)
	if err != nil {
		log.Warn("qmp unreachable", "err", err)
		return false
	}
	defer c.Close()
	if err := c.Quit(ctx); err != nil {
		log.Debug("qmp quit", "err", err) // QEMU may close before replying
	}
	return true
}
