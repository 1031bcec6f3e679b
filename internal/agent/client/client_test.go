package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// fakeAgent answers every connection with script after reading the
// client's Hello and Request.
func fakeAgent(t *testing.T, script func(c net.Conn)) *Client {
	t.Helper()
	return New(func(ctx context.Context) (net.Conn, error) {
		a, b := net.Pipe()
		go func() {
			defer b.Close()
			_ = b.SetDeadline(time.Now().Add(5 * time.Second))
			for range 2 {
				if _, err := proto.ReadFrame(b); err != nil {
					return
				}
			}
			script(b)
		}()
		return a, nil
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestAgentErrorsAreTyped(t *testing.T) {
	c := fakeAgent(t, func(s net.Conn) {
		_ = proto.WriteJSON(s, proto.TError, proto.Error{Code: proto.CodeVersion, Message: "too old"})
	})
	_, err := c.Health(ctx(t))
	if e, ok := proto.AsError(err); !ok || e.Code != proto.CodeVersion {
		t.Fatalf("got %v", err)
	}
}

func TestExecStreamProblems(t *testing.T) {
	start := func(s net.Conn) {
		_ = proto.WriteJSON(s, proto.THelloAck, proto.HelloAck{Version: 1})
		_ = proto.WriteJSON(s, proto.TResponse, proto.Response{Result: []byte(`{"pid":42}`)})
	}
	cases := []struct {
		name   string
		script func(s net.Conn)
		want   string
	}{
		{"closed before exit", func(s net.Conn) { start(s); _ = proto.WriteFrame(s, proto.TStdout, []byte("x")) }, "connection ended before exit"},
		{"error mid-stream", func(s net.Conn) {
			start(s)
			_ = proto.WriteJSON(s, proto.TError, proto.Error{Code: proto.CodeInternal, Message: "boom"})
		}, "internal: boom"},
		{"unexpected frame", func(s net.Conn) { start(s); _ = proto.WriteFrame(s, proto.TData, nil) }, "unexpected data frame"},
		{"wrong version", func(s net.Conn) { _ = proto.WriteJSON(s, proto.THelloAck, proto.HelloAck{Version: 7}) }, "protocol version 7"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := fakeAgent(t, tc.script).Exec(ctx(t), proto.ExecRequest{Argv: []string{"x"}}, nil, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestExecContextCancel(t *testing.T) {
	c := fakeAgent(t, func(s net.Conn) {
		_ = proto.WriteJSON(s, proto.THelloAck, proto.HelloAck{Version: 1})
		_ = proto.WriteJSON(s, proto.TResponse, proto.Response{})
		_, _ = proto.ReadFrame(s) // silent until the client goes away
	})
	cx, cancel := context.WithCancel(context.Background())
	p, err := c.Start(cx, proto.ExecRequest{Argv: []string{"x"}}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := p.Wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}
