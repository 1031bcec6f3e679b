package server

import (
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// sysCalls records what a fake guestSys was asked to do.
type sysCalls struct {
	clock    int64
	hostname string
	entropy  []byte
	network  *guestcfg.Network
}

func fakeGuestSys(rec *sysCalls) guestSys {
	if rec == nil {
		rec = &sysCalls{}
	}
	return guestSys{
		dial: func(context.Context, string) (net.Conn, error) {
			return nil, errors.New("network disabled in tests")
		},
		setClock:    func(ns int64) error { rec.clock = ns; return nil },
		addEntropy:  func(b []byte) (bool, error) { rec.entropy = append([]byte(nil), b...); return true, nil },
		setHostname: func(n string) error { rec.hostname = n; return nil },
		hostname: func() (string, error) {
			if rec.hostname == "" {
				return "before", nil
			}
			return rec.hostname, nil
		},
		// Never netlink: tests and fuzzing run on the host's network.
		configureNetwork: func(_ context.Context, n *guestcfg.Network) (string, error) {
			rec.network = n
			return "eth0 " + n.Interfaces[0].Address, nil
		},
		// Never mount: secrets tests install a fakeMounts (secrets_test.go).
		mount:     func(string, string, string, uintptr, string) error { return errors.New("mount disabled in tests") },
		unmount:   func(string, int) error { return errors.New("unmount disabled in tests") },
		mountInfo: func() ([]byte, error) { return nil, nil },
	}
}

// TestPostRestoreAppliesEverything: the clone gets the host's clock, the
// entropy and its new name, and the answer reports what was done.
func TestPostRestoreAppliesEverything(t *testing.T) {
	var calls sysCalls
	s := New(Config{Log: discardLogger(), Stages: NewStages(proto.StageKernel)})
	s.sys = fakeGuestSys(&calls)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Serve(ctx, ln) }()
	c := client.New(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	})
	now := time.Now().Add(time.Hour).UnixNano()
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	res, err := c.PostRestore(rctx, proto.PostRestoreRequest{UnixNano: now, Hostname: "clone-1", Entropy: []byte{1, 2, 3, 4}})
	if err != nil {
		t.Fatal(err)
	}
	if calls.clock != now || calls.hostname != "clone-1" || string(calls.entropy) != "\x01\x02\x03\x04" {
		t.Fatalf("calls %+v", calls)
	}
	if res.Hostname != "clone-1" || !res.Reseeded || res.EntropyBytes != 4 || res.ClockStepMS < 59*60*1000 {
		t.Fatalf("result %+v", res)
	}
}

// startPostRestore serves s on loopback TCP and returns a client for it.
func startPostRestore(t *testing.T, s *Server) *client.Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = s.Serve(ctx, ln) }()
	return client.New(func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ln.Addr().String())
	})
}

// TestPostRestoreNetwork: the clone's own network reaches the hook intact,
// the answer and the network stage report it, and a hook failure is an
// error and a failed stage, not a silent success.
func TestPostRestoreNetwork(t *testing.T) {
	network := &guestcfg.Network{
		Interfaces: []guestcfg.Interface{{MAC: "02:00:0a:58:00:06", Address: "10.88.0.6/24", Gateway: "10.88.0.1", MTU: 1500}},
		DNS:        []string{"10.88.0.1"},
		Search:     []string{"default"},
		Hosts:      []guestcfg.HostEntry{{IP: "10.88.0.6", Names: []string{"clone-1", "clone-1.default"}}},
	}
	tests := []struct {
		name      string
		req       proto.PostRestoreRequest
		hookErr   error
		wantErr   string
		wantNet   string
		wantStage proto.Stage
	}{
		{
			name:      "applied",
			req:       proto.PostRestoreRequest{Hostname: "clone-1", Network: network},
			wantNet:   "eth0 10.88.0.6/24",
			wantStage: proto.Stage{Name: proto.StageNetwork, Done: true, Detail: "lo up; eth0 10.88.0.6/24"},
		},
		{
			name:      "hook fails",
			req:       proto.PostRestoreRequest{Network: network},
			hookErr:   errors.New("no link with MAC 02:00:0a:58:00:06"),
			wantErr:   "configure network: no link with MAC",
			wantStage: proto.Stage{Name: proto.StageNetwork, Detail: "no link with MAC 02:00:0a:58:00:06"},
		},
		{
			name:      "no network leaves it alone",
			req:       proto.PostRestoreRequest{Hostname: "clone-1"},
			wantStage: proto.Stage{Name: proto.StageNetwork, Done: true, Detail: "lo up"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls sysCalls
			stages := NewStages(proto.StageNetwork)
			stages.Mark(proto.StageNetwork, "lo up")
			s := New(Config{Log: discardLogger(), Stages: stages})
			s.sys = fakeGuestSys(&calls)
			if tt.hookErr != nil {
				s.sys.configureNetwork = func(_ context.Context, n *guestcfg.Network) (string, error) {
					calls.network = n
					return "", tt.hookErr
				}
			}
			c := startPostRestore(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := c.PostRestore(ctx, tt.req)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if res.Network != tt.wantNet {
				t.Errorf("result network %q, want %q", res.Network, tt.wantNet)
			}
			if !reflect.DeepEqual(calls.network, tt.req.Network) {
				t.Errorf("hook got %+v, want %+v", calls.network, tt.req.Network)
			}
			if got := stages.Snapshot(); len(got) != 1 || got[0] != tt.wantStage {
				t.Errorf("stages %+v, want [%+v]", got, tt.wantStage)
			}
		})
	}
}
