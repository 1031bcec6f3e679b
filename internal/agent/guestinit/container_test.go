package guestinit

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/auth"
	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

func TestParseOwner(t *testing.T) {
	tests := []struct {
		in       string
		uid, gid int
		err      bool
	}{
		{"1000:100", 1000, 100, false},
		{"0:0", 0, 0, false},
		{"1000", 0, 0, true},
		{"a:b", 0, 0, true},
		{"-1:0", 0, 0, true},
		{":", 0, 0, true},
	}
	for _, tt := range tests {
		uid, gid, err := parseOwner(tt.in)
		if (err != nil) != tt.err || uid != tt.uid || gid != tt.gid {
			t.Errorf("parseOwner(%q) = %d, %d, %v", tt.in, uid, gid, err)
		}
	}
}

func TestContainerMainFlags(t *testing.T) {
	var stderr bytes.Buffer
	if code := ContainerMain([]string{"extra"}, &stderr, "t"); code != 2 {
		t.Errorf("extra argument: exit %d", code)
	}
	if code := ContainerMain([]string{"--bogus"}, &stderr, "t"); code != 2 {
		t.Errorf("unknown flag: exit %d", code)
	}
}

// TestContainerServes runs container mode in-process (not PID 1: no
// hostname change, no kill(-1)) and drives it like the host does.
func TestContainerServes(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	host, _ := os.Hostname()
	cfg := &guestcfg.Config{Version: 1, Name: "c1", Hostname: strings.ToLower(host),
		Transport: guestcfg.Transport{Kind: guestcfg.TransportUnix, UnixPath: sock}}
	if cfg.Validate() != nil {
		cfg.Hostname = "mvm" // odd host name: irrelevant here, hostname is not set off PID 1
	}
	wrap := testKeys(t, cfg)
	b, err := cfg.Encode()
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "mvm.json")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	console := filepath.Join(dir, "console.log")
	done := make(chan error, 1)
	go func() {
		done <- Container(ContainerOptions{ConfigFile: cfgPath, ConsoleFile: console,
			Owner: "1234:5678", Version: "test"})
	}()

	ac := client.New(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}, client.WithWrap(wrap))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var hr *proto.HealthResult
	for {
		hr, err = ac.Health(ctx)
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || !hr.Ready {
		t.Fatalf("health: %+v %v", hr, err)
	}
	if _, err := os.Stat(cfgPath); !os.IsNotExist(err) {
		t.Errorf("config with the guest key not deleted after reading: %v", err)
	}
	if os.Geteuid() == 0 {
		st, err := os.Stat(sock)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 || !ownedBy(st, 1234, 5678) {
			t.Errorf("socket mode %v, not 0600 owned by 1234:5678", st.Mode())
		}
	}
	var out bytes.Buffer
	ex, err := ac.Exec(ctx, proto.ExecRequest{Argv: []string{"/bin/sh", "-c", "echo hi"}}, nil, &out, nil)
	if err != nil || ex.Code != 0 || out.String() != "hi\n" {
		t.Fatalf("exec: %+v %q %v", ex, out.String(), err)
	}
	if err := ac.Shutdown(ctx, false); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("container mode: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("container mode did not return after shutdown")
	}
	log, _ := os.ReadFile(console)
	for _, want := range []string{"container mode", "ready: serving on unix:" + sock, "exiting"} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("console log lacks %q:\n%s", want, log)
		}
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestContainerRefusesOtherTransports(t *testing.T) {
	dir := t.TempDir()
	cfg := &guestcfg.Config{Version: 1, Name: "c", Hostname: "c", Transport: guestcfg.Transport{Kind: guestcfg.TransportVsock}}
	b, _ := cfg.Encode()
	p := filepath.Join(dir, "mvm.json")
	os.WriteFile(p, b, 0o600)
	err := Container(ContainerOptions{ConfigFile: p, ConsoleFile: filepath.Join(dir, "c.log")})
	if err == nil || !strings.Contains(err.Error(), "unix transport") {
		t.Errorf("err = %v", err)
	}
}

func ownedBy(fi os.FileInfo, uid, gid uint32) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == uid && st.Gid == gid
}

// testKeys puts a fresh guest key and a host key into cfg and returns the
// host's client wrap.
func testKeys(t *testing.T, cfg *guestcfg.Config) func(net.Conn) (net.Conn, error) {
	t.Helper()
	hostPriv, hostPub, err := auth.NewGuestKey() // any Ed25519 pair will do for the host
	if err != nil {
		t.Fatal(err)
	}
	guestPriv, guestPub, err := auth.NewGuestKey()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HostPublicKey, err = auth.MarshalPublicKey(hostPub); err != nil {
		t.Fatal(err)
	}
	if cfg.GuestPrivateKey, err = auth.MarshalPrivateKey(guestPriv); err != nil {
		t.Fatal(err)
	}
	tc, err := auth.ClientConfig(hostPriv, guestPub)
	if err != nil {
		t.Fatal(err)
	}
	return auth.ClientWrap(tc)
}

// TestContainerWithoutKeysServesNobody: a config without keys must not
// open an unauthenticated agent.
func TestContainerWithoutKeysServesNobody(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	cfg := &guestcfg.Config{Version: 1, Name: "c", Hostname: "mvm",
		Transport: guestcfg.Transport{Kind: guestcfg.TransportUnix, UnixPath: sock}}
	b, _ := cfg.Encode()
	p := filepath.Join(dir, "mvm.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Container(ContainerOptions{ConfigFile: p, ConsoleFile: filepath.Join(dir, "c.log")}) }()
	ac := client.New(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	for ctx.Err() == nil {
		if _, err = ac.Health(ctx); err == nil {
			t.Fatal("unauthenticated health answered")
		}
		if _, serr := os.Stat(sock); serr == nil {
			break // listening: the failure above was the refusal
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err = ac.Health(ctx); err == nil {
		t.Fatal("unauthenticated health answered")
	}
	log, _ := os.ReadFile(filepath.Join(dir, "c.log"))
	if !bytes.Contains(log, []byte("refusing every connection")) {
		t.Errorf("console log:\n%s", log)
	}
	select {
	case err := <-done:
		t.Fatalf("container mode exited: %v", err)
	default:
	}
}
