package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/auth"
	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/guestcfg"
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
		{[]string{"serve", "--listen", "tcp:127.0.0.1:0"}, 1, "refusing to serve"},
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
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	_, host, _ := ed25519.GenerateKey(nil)
	guest, guestPub, _ := auth.NewGuestKey()
	hostPub, _ := auth.MarshalPublicKey(host.Public().(ed25519.PublicKey))
	guestPriv, _ := auth.MarshalPrivateKey(guest)
	gc := &guestcfg.Config{Version: 1, Name: "t", Hostname: "t",
		Transport:     guestcfg.Transport{Kind: guestcfg.TransportUnix, UnixPath: sock},
		HostPublicKey: hostPub, GuestPrivateKey: guestPriv}
	b, err := gc.Encode()
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "mvm.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	var logs bytes.Buffer
	go func() { done <- run([]string{"serve", "--config", cfgFile}, &bytes.Buffer{}, &logs) }()
	tc, err := auth.ClientConfig(host, guestPub)
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}, client.WithWrap(auth.ClientWrap(tc)))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var h *proto.HealthResult
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
