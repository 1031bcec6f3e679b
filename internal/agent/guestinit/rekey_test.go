package guestinit

import (
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/auth"
	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/server"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

type keyPair struct {
	priv     ed25519.PrivateKey
	pub      ed25519.PublicKey
	privText string
	pubText  string
}

func newPair(t *testing.T) keyPair {
	t.Helper()
	priv, pub, err := auth.NewGuestKey()
	if err != nil {
		t.Fatal(err)
	}
	pt, _ := auth.MarshalPrivateKey(priv)
	ut, _ := auth.MarshalPublicKey(pub)
	return keyPair{priv, pub, pt, ut}
}

// TestRekeyOverPostRestore: a clone's agent takes new keys in post-restore
// over a connection authenticated with its old ones; afterwards the old
// host key (a template's bootstrap key) is refused and the new pair works.
func TestRekeyOverPostRestore(t *testing.T) {
	bootHost, oldGuest := newPair(t), newPair(t)
	userHost, newGuest := newPair(t), newPair(t)
	keys, err := NewKeys(&guestcfg.Config{HostPublicKey: bootHost.pubText, GuestPrivateKey: oldGuest.privText})
	if err != nil {
		t.Fatal(err)
	}
	s := server.New(server.Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Wrap: keys.Wrap, Rekey: keys.Rekey})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() { _ = s.Serve(ctx, ln) }()
	clientFor := func(host, guest keyPair) *client.Client {
		cfg, err := auth.ClientConfig(host.priv, guest.pub)
		if err != nil {
			t.Fatal(err)
		}
		return client.New(func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", ln.Addr().String())
		}, client.WithWrap(auth.ClientWrap(cfg)))
	}
	old, fresh := clientFor(bootHost, oldGuest), clientFor(userHost, newGuest)
	if _, err := fresh.Health(ctx); err == nil {
		t.Fatal("new keys accepted before the rekey")
	}
	// A half pair is refused and changes nothing.
	if _, err := old.PostRestore(ctx, proto.PostRestoreRequest{HostPublicKey: userHost.pubText}); err == nil {
		t.Fatal("a host key without a guest key was accepted")
	}
	if _, err := old.PostRestore(ctx, proto.PostRestoreRequest{HostPublicKey: "mvm-ed25519-pub nonsense", GuestPrivateKey: newGuest.privText}); err == nil || !strings.Contains(err.Error(), "host_public_key") {
		t.Fatalf("a bad host key: %v", err)
	}
	if _, err := old.Health(ctx); err != nil {
		t.Fatalf("old keys stopped working after refused rekeys: %v", err)
	}
	res, err := old.PostRestore(ctx, proto.PostRestoreRequest{HostPublicKey: userHost.pubText, GuestPrivateKey: newGuest.privText})
	if err != nil || !res.Rekeyed {
		t.Fatalf("rekey: %+v, %v", res, err)
	}
	if _, err := old.Health(ctx); err == nil {
		t.Fatal("the bootstrap host key still gets in after the rekey")
	}
	if _, err := fresh.Health(ctx); err != nil {
		t.Fatalf("new keys refused after the rekey: %v", err)
	}
}
