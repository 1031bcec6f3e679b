package supervisor

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/transport/serialmux"
)

// TestRelayResyncsStaleGuest plays a guest restored from a snapshot: it is
// still in its old session, so it swallows the relay's first SYNC without
// answering. The relay must give up on that attempt and sync afresh.
func TestRelayResyncsStaleGuest(t *testing.T) {
	old := syncTimeout
	syncTimeout = 300 * time.Millisecond
	t.Cleanup(func() { syncTimeout = old })

	dir := t.TempDir()
	serial := filepath.Join(dir, "serial-agent.sock")
	agent := filepath.Join(dir, AgentSock)
	ln, err := net.Listen("unix", serial)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		stale, err := ln.Accept()
		if err != nil {
			return
		}
		defer stale.Close()
		go io.Copy(io.Discard, stale) // eats the SYNC, never ACKs
		c, err := ln.Accept()
		if err != nil {
			return
		}
		sess, err := serialmux.Server(c)
		if err != nil {
			return
		}
		for {
			st, err := sess.Accept()
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				b, _ := io.ReadAll(st)
				st.Write(append([]byte("fresh:"), b...))
			}()
		}
	}()
	r := &relay{serial: serial, agent: agent, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := r.listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.run(ctx)
	start := time.Now()
	if got := roundTrip(t, agent, "hi"); got != "fresh:hi" {
		t.Fatalf("got %q", got)
	}
	if d := time.Since(start); d < syncTimeout {
		t.Fatalf("answered after %v, before the stale attempt could time out", d)
	}
}
