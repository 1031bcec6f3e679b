package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
)

func TestRunFlags(t *testing.T) {
	cases := []struct {
		args []string
		code int
		out  string
	}{
		{nil, 2, "usage"},
		{[]string{"version"}, 0, "mvm-agent "},
		{[]string{"version", "x"}, 2, "usage"},
		{[]string{"bogus"}, 2, "unknown command"},
		{[]string{"serve"}, 2, "need --listen or --config"},
		{[]string{"serve", "--nope"}, 2, "flag provided but not defined"},
		{[]string{"serve", "--listen", "carrier-pigeon:1"}, 2, "unknown kind"},
		{[]string{"serve", "--listen", "vsock:abc"}, 2, "vsock port"},
		{[]string{"serve", "--listen", "unix:/tmp/x.sock", "extra"}, 2, "unexpected argument"},
		{[]string{"serve", "--config", "/nonexistent/mvm.json"}, 1, "read config"},
	}
	for _, tc := range cases {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(out.String()+errb.String(), tc.out) {
			t.Errorf("%q: code %d output %q; want %d containing %q", tc.args, code, out.String()+errb.String(), tc.code, tc.out)
		}
	}
}

func TestServeUnixAndShutdown(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	done := make(chan int, 1)
	var logs bytes.Buffer
	go func() { done <- run([]string{"serve", "--listen", "unix:" + sock}, &bytes.Buffer{}, &logs) }()
	c := client.New(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var h *proto.HealthResult
	var err error
	for range 200 { // the listener comes up asynchronously
		if h, err = c.Health(ctx); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || !h.Ready {
		t.Fatalf("health: %v %+v", err, h)
	}
	var out bytes.Buffer
	exit, err := c.Exec(ctx, proto.ExecRequest{Argv: []string{"echo", "hi"}}, nil, &out, nil)
	if err != nil || exit.Code != 0 || out.String() != "hi\n" {
		t.Fatalf("exec: %v %+v %q", err, exit, out.String())
	}
	if err := c.Shutdown(ctx, false); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited %d: %s", code, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop after shutdown")
	}
}
