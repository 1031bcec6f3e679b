package server

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// sysCalls records what a fake guestSys was asked to do.
type sysCalls struct {
	clock    int64
	hostname string
	entropy  []byte
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
