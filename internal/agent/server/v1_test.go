package server_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/auth"
	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/server"
	"github.com/mvm-dev/mvm/internal/agent/tarx"
)

// syncBuffer is a bytes.Buffer safe for the client's output goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func needPTY(t *testing.T) {
	t.Helper()
	needSh(t)
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		t.Skip("needs /dev/ptmx")
	}
}

func TestExecTTY(t *testing.T) {
	needPTY(t)
	forEachTransport(t, server.Config{}, func(t *testing.T, c *client.Client, _ client.Dialer) {
		t.Run("is a terminal with the requested size", func(t *testing.T) {
			var out syncBuffer
			req := proto.ExecRequest{Argv: []string{"sh", "-c", "test -t 0 && test -t 1 && stty size; exit 3"}, TTY: true, Cols: 123, Rows: 45}
			exit, err := c.Exec(testCtx(t), req, strings.NewReader(""), &out, nil)
			if err != nil || exit.Code != 3 || !strings.Contains(out.String(), "45 123") {
				t.Fatalf("exit %+v err %v output %q", exit, err, out.String())
			}
		})
		t.Run("input echo and resize", func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			var out syncBuffer
			p, err := c.Start(testCtx(t), proto.ExecRequest{Argv: []string{"sh"}, TTY: true}, pr, &out, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(pw, "echo hi-$((40+2))\n")
			waitFor(t, "echo output", func() bool { return strings.Contains(out.String(), "hi-42") })
			if err := p.Resize(100, 30); err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(pw, "stty size; exit 7\n")
			exit, err := p.Wait()
			if err != nil || exit.Code != 7 || !strings.Contains(out.String(), "30 100") {
				t.Fatalf("exit %+v err %v output %q", exit, err, out.String())
			}
		})
	})
}

func TestConsole(t *testing.T) {
	needPTY(t)
	t.Run("denied without policy", func(t *testing.T) {
		_, c := authedTCP(t, server.Config{})
		_, err := c.Console(testCtx(t), proto.ConsoleRequest{}, strings.NewReader(""), io.Discard)
		if e, ok := proto.AsError(err); !ok || e.Code != proto.CodeDenied || !strings.Contains(e.Message, "[access] console") {
			t.Fatalf("got %v", err)
		}
	})
	forEachTransport(t, server.Config{Console: true}, func(t *testing.T, c *client.Client, _ client.Dialer) {
		pr, pw := io.Pipe()
		defer pw.Close()
		var out syncBuffer
		p, err := c.Console(testCtx(t), proto.ConsoleRequest{Cols: 90, Rows: 20}, pr, &out)
		if err != nil {
			t.Fatal(err)
		}
		// One session at a time.
		_, err = c.Console(testCtx(t), proto.ConsoleRequest{}, strings.NewReader(""), io.Discard)
		if e, ok := proto.AsError(err); !ok || e.Code != proto.CodeBusy || !strings.Contains(e.Message, "console busy") {
			t.Fatalf("second console: %v", err)
		}
		_, _ = io.WriteString(pw, "echo h''i\n") // the echoed input never contains "hi"
		waitFor(t, "hi", func() bool { return strings.Contains(out.String(), "hi\r\n") })
		_, _ = io.WriteString(pw, "exit 5\n")
		exit, err := p.Wait()
		if err != nil || exit.Code != 5 {
			t.Fatalf("exit %+v %v", exit, err)
		}
		// The slot is free again; an idle session ends by itself.
		var waitErr error
		waitFor(t, "console slot", func() bool {
			p, err := c.Console(testCtx(t), proto.ConsoleRequest{Command: []string{"sleep", "30"}, IdleTimeoutMS: 300}, pr, io.Discard)
			if err != nil {
				return false
			}
			exit, waitErr = p.Wait()
			return true
		})
		if waitErr != nil || !exit.IdleTimeout || exit.Signal == "" {
			t.Fatalf("idle session: %+v %v", exit, waitErr)
		}
	})
}

func TestForward(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // upper-cases what it reads, then closes after EOF
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				_, _ = c.Write(bytes.ToUpper(b))
			}()
		}
	}()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	forEachTransport(t, server.Config{}, func(t *testing.T, c *client.Client, _ client.Dialer) {
		big := bytes.Repeat([]byte("abcdefgh"), 100<<10) // 800 KiB: many frames
		s, err := c.Forward(testCtx(t), proto.ForwardRequest{Port: port})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		go func() {
			_, _ = s.Write(big)
			_ = s.CloseWrite()
		}()
		got, err := io.ReadAll(s)
		if err != nil || !bytes.Equal(got, bytes.ToUpper(big)) {
			t.Fatalf("forward: %d bytes, err %v", len(got), err)
		}
		_, err = c.Forward(testCtx(t), proto.ForwardRequest{Port: port, Host: "10.0.0.1"})
		if e, ok := proto.AsError(err); !ok || e.Code != proto.CodeDenied {
			t.Fatalf("non-loopback: %v", err)
		}
	})
	// A closed port is a clear error.
	_, c := authedTCP(t, server.Config{})
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := uint16(ln2.Addr().(*net.TCPAddr).Port)
	ln2.Close()
	_, err = c.Forward(testCtx(t), proto.ForwardRequest{Port: closed})
	if e, ok := proto.AsError(err); !ok || e.Code != proto.CodeUnavailable {
		t.Fatalf("closed port: %v", err)
	}
}

func TestCopy(t *testing.T) {
	root := t.TempDir()
	forEachTransport(t, server.Config{CopyRoot: root}, func(t *testing.T, c *client.Client, _ client.Dialer) {
		src := filepath.Join(t.TempDir(), "tree")
		must(t, os.MkdirAll(filepath.Join(src, "sub"), 0o750))
		must(t, os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\n"), 0o755))
		must(t, os.WriteFile(filepath.Join(src, "sub", "data"), bytes.Repeat([]byte{7}, 300<<10), 0o640))
		must(t, os.Symlink("run.sh", filepath.Join(src, "link")))
		guestDir := "/dst-" + filepath.Base(t.Name())
		must(t, os.MkdirAll(filepath.Join(root, guestDir), 0o755))

		pr, pw := io.Pipe()
		go func() { _, err := tarx.Write(pw, src); pw.CloseWithError(err) }()
		res, err := c.CopyIn(testCtx(t), proto.CopyRequest{Path: guestDir}, pr)
		if err != nil || res.Files != 5 || res.Bytes != 300<<10+10 {
			t.Fatalf("copy-in: %+v %v", res, err)
		}
		for name, mode := range map[string]os.FileMode{"tree/run.sh": 0o755, "tree/sub": 0o750 | os.ModeDir, "tree/sub/data": 0o640} {
			fi, err := os.Stat(filepath.Join(root, guestDir, name))
			if err != nil || fi.Mode() != mode {
				t.Errorf("%s: %v %v, want %v", name, fi.Mode(), err, mode)
			}
		}
		// And back out, renamed.
		var buf bytes.Buffer
		res, err = c.CopyOut(testCtx(t), proto.CopyRequest{Path: guestDir + "/tree"}, &buf)
		if err != nil || res.Files != 5 {
			t.Fatalf("copy-out: %+v %v", res, err)
		}
		back := t.TempDir()
		if _, err := tarx.Extract(&buf, back, tarx.Options{Rename: "copy"}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(back, "copy", "sub", "data"))
		if err != nil || len(b) != 300<<10 {
			t.Fatalf("round trip: %d bytes %v", len(b), err)
		}
		if l, _ := os.Readlink(filepath.Join(back, "copy", "link")); l != "run.sh" {
			t.Fatalf("symlink: %q", l)
		}
		_, err = c.CopyOut(testCtx(t), proto.CopyRequest{Path: "/no/such"}, io.Discard)
		if e, ok := proto.AsError(err); !ok || e.Code != proto.CodeNotFound {
			t.Fatalf("missing: %v", err)
		}
		// A hostile archive is refused and nothing escapes.
		var evil bytes.Buffer
		tw := tar.NewWriter(&evil)
		_ = tw.WriteHeader(&tar.Header{Name: "../escape", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
		_, _ = tw.Write([]byte("x"))
		_ = tw.Close()
		_, err = c.CopyIn(testCtx(t), proto.CopyRequest{Path: guestDir}, &evil)
		if e, ok := proto.AsError(err); !ok || !strings.Contains(e.Message, "escapes") {
			t.Fatalf("traversal: %v", err)
		}
		if _, err := os.Stat(filepath.Join(root, "escape")); err == nil {
			t.Fatal("archive escaped the destination")
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestGarbageInDataStream(t *testing.T) {
	dial, c := authedTCP(t, server.Config{CopyRoot: t.TempDir()})
	conn, err := dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write(hello)
	_, _ = conn.Write(frame(proto.TRequest, `{"op":"copy-in","args":{"path":"/"}}`))
	_, _ = conn.Write(frame(proto.TStdin, "not data"))
	frames := readAll(t, conn)
	if code := errCode(t, frames); code != proto.CodeBadRequest {
		t.Fatalf("code %s", code)
	}
	if _, err := c.Health(testCtx(t)); err != nil {
		t.Fatalf("agent stopped serving: %v", err)
	}
}

func TestAuthFailures(t *testing.T) {
	ln, dial := tcpTransport(t)
	keys := newTestKeys(t)
	startServer(t, server.Config{Wrap: keys.serverWrap}, ln)
	good := client.New(dial, client.WithWrap(keys.clientWrap))

	t.Run("no TLS", func(t *testing.T) {
		conn, err := dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = conn.Write(append(hello, frame(proto.TRequest, `{"op":"health"}`)...))
		if frames := readAll(t, conn); len(frames) != 0 {
			t.Fatalf("unauthenticated client got frames %v", frames)
		}
	})
	t.Run("wrong host key", func(t *testing.T) {
		other := newTestKeys(t)
		cfg, err := auth.ClientConfig(other.host, keys.guestPub)
		must(t, err)
		_, err = client.New(dial, client.WithWrap(auth.ClientWrap(cfg))).Health(testCtx(t))
		if !errors.Is(err, auth.ErrKeyMismatch) || !strings.Contains(err.Error(), "refused our host key") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("wrong guest pin", func(t *testing.T) {
		other := newTestKeys(t)
		cfg, err := auth.ClientConfig(keys.host, other.guestPub)
		must(t, err)
		_, err = client.New(dial, client.WithWrap(auth.ClientWrap(cfg))).Health(testCtx(t))
		if !errors.Is(err, auth.ErrKeyMismatch) || !strings.Contains(err.Error(), "does not match the key pinned") {
			t.Fatalf("got %v", err)
		}
	})
	if _, err := good.Health(testCtx(t)); err != nil {
		t.Fatalf("agent stopped serving after refusals: %v", err)
	}
}
