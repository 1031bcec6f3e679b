// Package regtest starts real storage servers for tests, on loopback only:
// Debian's docker-registry (distribution 2.8, which has no referrers API)
// and versitygw (an S3 gateway over a directory). It also has MemStore, an
// in-memory registry.Store for fast unit tests. Tests of any package may
// use it; a missing server binary skips the test, naming the install.
package regtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Versions scripts/setup.sh installs; the skip messages name them.
const (
	VersitygwVersion = "v1.8.0"
	CraneVersion     = "v0.22.1"
	OrasVersion      = "v1.3.6"
)

// Install commands, for skip messages.
const (
	InstallDockerRegistry = "apt-get install docker-registry"
	InstallVersitygw      = "go install github.com/versity/versitygw/cmd/versitygw@" + VersitygwVersion
	InstallCrane          = "go install github.com/google/go-containerregistry/cmd/crane@" + CraneVersion
	InstallOras           = "go install oras.land/oras/cmd/oras@" + OrasVersion
)

// Binary returns the path of a program on PATH or in a Go bin directory
// ($GOBIN, each $GOPATH/bin, ~/go/bin), where `go install` puts it, or
// skips the test saying how to install it.
func Binary(t testing.TB, name, install string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			gopath = filepath.Join(home, "go")
		}
	}
	for _, d := range filepath.SplitList(gopath) {
		dirs = append(dirs, filepath.Join(d, "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Skipf("%s is not installed: %s (scripts/setup.sh does it)", name, install)
	return ""
}

// freePort picks a loopback port nobody listens on now. Another process
// could take it before the server binds it, so start retries on a clash.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("regtest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// server is one child process serving on a loopback port.
type server struct {
	name string
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
	once sync.Once
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start runs argv (with a bare environment, so nothing of the caller's
// configures the server) and waits until ready answers; it retries on a
// fresh port when the process dies, which is what a port clash looks like.
func start(t testing.TB, name string, argv func(port int) []string, dir string, ready func(ctx context.Context, port int) error) (*server, int) {
	t.Helper()
	var last string
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		args := argv(port)
		s := &server{name: name, log: &lockedBuffer{}, done: make(chan struct{})}
		s.cmd = exec.Command(args[0], args[1:]...)
		s.cmd.Dir = dir
		s.cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + dir}
		s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
		s.cmd.SysProcAttr = procAttr()
		if err := s.cmd.Start(); err != nil {
			t.Fatalf("regtest: start %s: %v", name, err)
		}
		go func() { s.cmd.Wait(); close(s.done) }()
		t.Cleanup(func() {
			s.Stop()
			if t.Failed() {
				t.Logf("regtest: %s output:\n%s", name, tail(s.log.String(), 4000))
			}
		})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := waitReady(ctx, s, port, ready)
		cancel()
		if err == nil {
			return s, port
		}
		s.Stop()
		last = fmt.Sprintf("%v\n%s", err, tail(s.log.String(), 4000))
		if !errors.Is(err, errExited) {
			break
		}
	}
	t.Fatalf("regtest: %s did not start: %s", name, last)
	return nil, 0
}

var errExited = errors.New("server exited")

func waitReady(ctx context.Context, s *server, port int, ready func(ctx context.Context, port int) error) error {
	for {
		err := ready(ctx, port)
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("%w: %s", errExited, s.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("not ready on 127.0.0.1:%d: %v", port, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop ends the server (and waits for it), so tests can see what a client
// makes of a server that is gone. Safe to call more than once.
func (s *server) Stop() {
	s.once.Do(func() {
		select {
		case <-s.done:
			return
		default:
		}
		pgid := s.cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.done
		}
	})
}

// httpReady is a ready check: any HTTP answer from path means serving.
func httpReady(client *http.Client, scheme, path string) func(ctx context.Context, port int) error {
	return func(ctx context.Context, port int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://127.0.0.1:"+strconv.Itoa(port)+path, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return strings.TrimRight(s, "\n")
}
