//go:build linux

// The agent these tests run in-process is Linux-only (guest code).

package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/server"
)

// execAgent serves a real agent on loopback TCP for the test's length and
// returns an agent factory for runExec. wrap, when set, wraps each client
// connection.
func execAgent(t *testing.T, wrap func(net.Conn) net.Conn) func(context.Context) (*client.Client, error) {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("needs /bin/sh")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = server.New(server.Config{}).Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	addr := ln.Addr().String()
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil || wrap == nil {
			return c, err
		}
		return wrap(c), nil
	}
	return func(context.Context) (*client.Client, error) { return client.New(dial), nil }
}

// mainContext is what cmd/mvmctl hands cli.Main: cancelled by SIGINT or
// SIGTERM. Its Done also tells the test that a signal it sent itself has
// been dispatched to every channel registered for it.
func mainContext(t *testing.T) context.Context {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	t.Cleanup(stop)
	return ctx
}

func sigtermSelf(t *testing.T, mainCtx context.Context) {
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Errorf("kill: %v", err)
		return
	}
	select {
	case <-mainCtx.Done():
	case <-time.After(10 * time.Second):
		t.Error("SIGTERM never reached the test's NotifyContext")
	}
}

// readAhead holds back everything the agent sends until mark has arrived,
// then runs fire, then lets the client read it all. The client is still
// inside Start (reading the hello-ack) when fire runs, while the command is
// already running and has printed mark: the earliest moment at which a
// caller watching the output could signal.
type readAhead struct {
	net.Conn
	mark  []byte
	fire  func()
	buf   bytes.Buffer
	err   error
	fired bool
}

func (c *readAhead) Read(p []byte) (int, error) {
	for !c.fired && c.err == nil {
		if bytes.Contains(c.buf.Bytes(), c.mark) {
			c.fired = true
			c.fire()
			break
		}
		b := make([]byte, 4096)
		n, err := c.Conn.Read(b)
		c.buf.Write(b[:n])
		c.err = err
	}
	if c.buf.Len() > 0 {
		return c.buf.Read(p)
	}
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(p)
}

func execSh(script string) proto.ExecRequest {
	return proto.ExecRequest{Argv: []string{"sh", "-c", script}}
}

// The race test/e2e once lost: SIGTERM sent as soon as the command's first
// line shows, before exec had registered for it. It went to main's
// NotifyContext alone and the command ran out its sleep with status 0.
func TestExecSignalAtFirstOutput(t *testing.T) {
	mainCtx := mainContext(t)
	agent := execAgent(t, func(c net.Conn) net.Conn {
		return &readAhead{Conn: c, mark: []byte("started\n"), fire: func() { sigtermSelf(t, mainCtx) }}
	})
	var stdout, stderr bytes.Buffer
	began := time.Now()
	err := runExec(mainCtx, agent, execSh(`trap 'echo got-term; exit 42' TERM; echo started; sleep 10 & wait`),
		terminal{fd: -1}, nil, &stdout, &stderr)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 42 || !strings.Contains(stdout.String(), "got-term") {
		t.Fatalf("signal lost: after %v err %v, stdout %q, stderr %q", time.Since(began).Round(time.Millisecond), err, stdout.String(), stderr.String())
	}
}

// A signal before the command exists is held and delivered once it does.
func TestExecSignalBeforeStart(t *testing.T) {
	mainCtx := mainContext(t)
	serve := execAgent(t, nil)
	agent := func(ctx context.Context) (*client.Client, error) {
		sigtermSelf(t, mainCtx)
		return serve(ctx)
	}
	err := runExec(mainCtx, agent, proto.ExecRequest{Argv: []string{"sleep", "10"}}, terminal{fd: -1}, nil, nil, nil)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 128+int(syscall.SIGTERM) {
		t.Fatalf("want the command killed by SIGTERM, got %v", err)
	}
}

// A signal that main caught before exec could catch it stops the command
// from starting rather than vanishing.
func TestExecSignalBeforeRelay(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	agent := func(context.Context) (*client.Client, error) { called = true; return nil, errors.New("dialled") }
	err := runExec(parent, agent, execSh("true"), terminal{fd: -1}, nil, nil, nil)
	if !errors.Is(err, context.Canceled) || called {
		t.Fatalf("err %v, agent dialled: %v", err, called)
	}
}

func TestStartFailureExitStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int // 0: passed through, not an ExitError
	}{
		{"no such program", proto.Errorf(proto.CodeNotFound, "executable %q not found in PATH", "x"), 127},
		{"not executable", fmt.Errorf("exec: %w", proto.Errorf(proto.CodeDenied, "permission denied")), 126},
		{"unknown user", proto.Errorf(proto.CodeBadRequest, "user %q not found", "u"), 126},
		{"agent busy", proto.Errorf(proto.CodeBusy, "too many"), 0},
		{"VM unreachable", errors.New("dial agent: connection refused"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := startFailure(tc.err)
			var ee *ExitError
			if !errors.As(err, &ee) {
				if tc.want != 0 {
					t.Fatalf("got %v, want exit status %d", err, tc.want)
				}
				if err != tc.err {
					t.Fatalf("error changed: %v", err)
				}
				return
			}
			if ee.Code != tc.want || !errors.Is(err, tc.err) {
				t.Fatalf("exit status %d (%v), want %d wrapping the cause", ee.Code, ee.Err, tc.want)
			}
		})
	}
}
