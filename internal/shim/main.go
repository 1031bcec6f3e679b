//go:build linux

package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"

	"github.com/mvm-dev/mvm/pkg/mvm"
)

// socketDir holds the shims' sockets; containerd's runc shim uses the same
// directory. Paths must stay under the 108 bytes of a sockaddr_un.
const socketDir = "/run/containerd/s"

// listenerFD is where `start` hands the daemon its listening socket.
const listenerFD = 3

// flags are those containerd passes every shim invocation.
type flags struct {
	namespace, address, publishBinary, id, bundle string
	debug                                         bool
}

// Main is the shim binary: `start` (launch the daemon, print its
// address), `delete` (clean up after a dead shim) or, with no action, the
// daemon serving the task API. It returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("containerd-shim-mvm-v1", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f flags
	fs.StringVar(&f.namespace, "namespace", "", "containerd namespace")
	fs.StringVar(&f.address, "address", "", "containerd's gRPC socket")
	fs.StringVar(&f.publishBinary, "publish-binary", "", "containerd binary (unused: events go over ttrpc)")
	fs.StringVar(&f.id, "id", "", "container id")
	fs.StringVar(&f.bundle, "bundle", "", "bundle directory (delete)")
	fs.BoolVar(&f.debug, "debug", false, "debug logging")
	version := fs.Bool("v", false, "show the version")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, "containerd-shim-mvm-v1 (mvm), task API v2")
		return 0
	}
	if f.namespace == "" || f.id == "" {
		fmt.Fprintln(stderr, "containerd-shim-mvm-v1: -namespace and -id are required (containerd starts this binary)")
		return 2
	}
	var err error
	switch action := fs.Arg(0); action {
	case "start":
		var addr string
		if addr, err = start(f); err == nil {
			fmt.Fprint(stdout, addr)
		}
	case "delete":
		err = cleanup(f, stdout, stderr)
	case "":
		err = serve(f)
	default:
		err = fmt.Errorf("unknown action %q (start, delete, or none to serve)", action)
	}
	if err != nil {
		fmt.Fprintf(stderr, "containerd-shim-mvm-v1: %v\n", err)
		return 1
	}
	return 0
}

func socketPath(f flags) string {
	h := sha256.Sum256([]byte(f.address + "\x00" + f.namespace + "\x00" + f.id))
	return filepath.Join(socketDir, "mvm-"+hex.EncodeToString(h[:16]))
}

// start is `shim start`: it listens on the shim's socket, starts the
// daemon with that socket (detached, in its own session, so containerd's
// wait for this process's output ends) and returns the address containerd
// dials. The cwd is the bundle.
func start(f flags) (string, error) {
	path := socketPath(f)
	if err := os.MkdirAll(socketDir, 0o711); err != nil {
		return "", fmt.Errorf("socket dir: %w", err)
	}
	_ = os.Remove(path) // a stale socket of a shim that crashed
	l, err := net.Listen("unix", path)
	if err != nil {
		return "", fmt.Errorf("listen: %w", err)
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // the daemon owns it now
	lf, err := ul.File()
	l.Close()
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("listener fd: %w", err)
	}
	defer lf.Close()
	self, err := os.Executable()
	if err != nil {
		os.Remove(path)
		return "", err
	}
	args := []string{"-namespace", f.namespace, "-id", f.id, "-address", f.address}
	if f.debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.ExtraFiles = []*os.File{lf} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Env = os.Environ()
	if err := cmd.Start(); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("start shim daemon: %w", err)
	}
	_ = cmd.Process.Release()
	addr := "unix://" + path
	if err := os.WriteFile("address", []byte(addr), 0o600); err != nil {
		return "", fmt.Errorf("write address: %w", err)
	}
	return addr, nil
}

// logger writes to the bundle's "log" FIFO, which containerd reads into
// its own log, or nowhere when there is none.
func logger(debug bool) (*slog.Logger, io.Closer) {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	var w io.Writer = io.Discard
	var c io.Closer = io.NopCloser(nil)
	// O_NONBLOCK: the open fails instead of hanging without a reader.
	if fd, err := syscall.Open("log", syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0); err == nil {
		if err := syscall.SetNonblock(fd, false); err == nil {
			f := os.NewFile(uintptr(fd), "log")
			w, c = f, f
		} else {
			syscall.Close(fd)
		}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), c
}

// newClient is the mvm client of the shim: mvm's default state (or
// MVM_*_DIR from containerd's environment), binaries beside the shim.
func newClient(log *slog.Logger) (VMs, error) {
	o := mvm.Options{Logger: log}
	if self, err := os.Executable(); err == nil {
		dir := filepath.Dir(self)
		if _, err := os.Stat(filepath.Join(dir, "mvmctl")); err == nil {
			o.BinDir = dir
		}
	}
	c, err := mvm.New(o)
	if err != nil {
		return nil, err
	}
	return ClientVMs{c}, nil
}

// serve is the daemon: the task API on the socket `start` made, until
// Shutdown.
func serve(f flags) error {
	log, lc := logger(f.debug)
	defer lc.Close()
	log = log.With("id", f.id, "ns", f.namespace)
	lf := os.NewFile(listenerFD, "listener")
	l, err := net.FileListener(lf)
	lf.Close()
	if err != nil {
		return fmt.Errorf("listener from containerd-shim start: %w", err)
	}
	path := socketPath(f)
	defer os.Remove(path)
	c, err := newClient(log)
	if err != nil {
		l.Close()
		return err
	}
	pub := newPublisher(os.Getenv("TTRPC_ADDRESS"), f.namespace, log)
	defer pub.close()
	srv, err := ttrpc.NewServer()
	if err != nil {
		l.Close()
		return err
	}
	done := make(chan struct{})
	exitOnce := make(chan struct{}, 1)
	svc := NewService(Config{
		Namespace: f.namespace, ID: f.id, VMs: c, Backend: envOr("MVM_SHIM_BACKEND", "qemu"),
		Image: os.Getenv("MVM_SHIM_IMAGE"), Publisher: pub, Log: log,
		Exit: func() {
			select {
			case exitOnce <- struct{}{}:
				// After the Shutdown reply is written: containerd waits for it.
				go func() { time.Sleep(100 * time.Millisecond); close(done) }()
			default:
			}
		},
	})
	taskapi.RegisterTaskService(srv, svc)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(context.Background(), l) }()
	log.Info("shim serving", "socket", path)
	select {
	case <-done:
	case err = <-errc:
		if errors.Is(err, ttrpc.ErrServerClosed) {
			err = nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	log.Info("shim exiting")
	return err
}

func envOr(k, def string) string {
	if v := strings.TrimSpace(os.Getenv(k)); v != "" {
		return v
	}
	return def
}

// cleanup is `shim delete`: the bundle is -bundle (or the cwd).
func cleanup(f flags, stdout, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	bundle := f.bundle
	if bundle == "" {
		var err error
		if bundle, err = os.Getwd(); err != nil {
			return err
		}
	}
	c, err := newClient(log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp := Cleanup(ctx, c, bundle, log)
	_ = os.Remove(socketPath(f))
	b, err := proto.Marshal(resp)
	if err != nil {
		return err
	}
	_, err = stdout.Write(b)
	return err
}
