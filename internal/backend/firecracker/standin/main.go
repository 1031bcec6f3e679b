package standin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/backend/qemu"
)

// guardArg selects guard mode (see startGuard).
const guardArg = "--standin-guard"

// Main runs the stand-in with Firecracker's command line (--api-sock,
// --id, and the logging/seccomp flags it accepts and ignores) and returns
// the exit code.
func Main(args []string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if len(args) > 0 && args[0] == guardArg {
		return runGuard(args[1:], log)
	}
	fs := flag.NewFlagSet("firecracker", flag.ContinueOnError)
	apiSock := fs.String("api-sock", "/run/firecracker.socket", "API socket")
	id := fs.String("id", "anonymous-instance", "instance id")
	workDir := fs.String("standin-dir", "", "where the QEMU guest lives (default: beside the API socket)")
	version := fs.Bool("version", false, "print the version")
	fs.String("level", "", "log level (ignored)")
	fs.String("log-path", "", "log path (ignored)")
	fs.String("seccomp-filter", "", "seccomp filter (ignored: no Firecracker threads to filter)")
	fs.Bool("boot-timer", false, "ignored")
	for _, f := range []string{"start-time-us", "start-time-cpu-us", "parent-cpu-time-us"} {
		fs.String(f, "", "passed by the jailer (ignored)")
	}
	root := fs.String("standin-root", "", "jail root (set by the stand-in jailer)")
	owner := fs.Int("standin-owner", 0, "the jail's uid (set by the stand-in jailer)")
	if err := fs.Parse(args); err != nil {
		return 153 // Firecracker's exit code for bad arguments
	}
	if *version {
		fmt.Printf("Firecracker v%s (stand-in)\n", Version)
		return 0
	}
	probe := &Server{Root: *root}
	*apiSock = probe.resolve(*apiSock)
	if *workDir == "" {
		// Short and outside the VM directory: the qemu backend's sockets
		// must fit in a unix socket path, and a jail root is deep. Named
		// after the API socket, so it is this VM's alone; removed on exit.
		sum := sha256.Sum256([]byte(*apiSock))
		*workDir = filepath.Join(os.TempDir(), "fcstandin-"+hex.EncodeToString(sum[:6]))
		defer os.RemoveAll(*workDir)
	}
	if abs, err := filepath.Abs(*workDir); err == nil {
		*workDir = abs
	}
	// Like Firecracker: an existing socket path is an error, not reused.
	ln, err := net.Listen("unix", *apiSock)
	if err != nil {
		log.Error(fmt.Sprintf("Failed to open the API socket at: %s. Check that it is not already used.", *apiSock), "err", err)
		return 1
	}
	defer os.Remove(*apiSock)
	guard, err := startGuard(*workDir)
	if err != nil {
		log.Error("stand-in guard", "err", err)
		return 1
	}
	defer guard.Process.Kill()
	srv := NewServer(*id, QEMURunner(*workDir), log)
	srv.Load = QEMULoader(*workDir)
	srv.Root, srv.Owner = *root, *owner
	defer srv.Close()
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-srv.Exited():
	case sig := <-sigs:
		log.Info("stopping", "signal", sig.String())
	}
	return 0
}

// startGuard starts a child that kills the QEMU guest in dir when this
// process dies, however it dies: the qemu backend's supervisor is detached
// (it outlives its caller by design), while a Firecracker VM dies with its
// process, and a SIGKILLed stand-in must leave nothing running.
func startGuard(dir string) (*exec.Cmd, error) {
	cmd := exec.Command("/proc/self/exe", guardArg, dir, strconv.Itoa(os.Getpid()))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	return cmd, cmd.Start()
}

func runGuard(args []string, log *slog.Logger) int {
	if len(args) != 2 {
		return 2
	}
	dir := args[0]
	parent, _ := strconv.Atoi(args[1])
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	if os.Getppid() == parent {
		<-sigs
	}
	if os.Getppid() == parent {
		return 0 // told to go by the stand-in itself
	}
	be, err := backend.Get(qemu.Name)
	if err != nil {
		return 1
	}
	h, err := be.Open(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0 // the guest never started
		}
		log.Error("stand-in guard: open guest", "err", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.Kill(ctx); err != nil {
		log.Error("stand-in guard: kill guest", "err", err)
		return 1
	}
	if filepath.Base(filepath.Dir(dir)) == filepath.Base(os.TempDir()) && strings.HasPrefix(filepath.Base(dir), "fcstandin-") {
		os.RemoveAll(dir)
	}
	log.Warn("stand-in died; guest killed")
	return 0
}
