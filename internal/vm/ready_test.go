package vm

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/backend"
)

func TestReadyWait(t *testing.T) {
	defer func(r, s, e time.Duration) { retryPause, stagePause, exitPoll = r, s, e }(retryPause, stagePause, exitPoll)
	retryPause, stagePause, exitPoll = time.Millisecond, time.Millisecond, 5*time.Millisecond
	errRefused := errors.New("connection refused")
	errSecrets := errors.New("secrets refused")
	ready := &proto.HealthResult{Ready: true}
	booting := &proto.HealthResult{Stages: []proto.Stage{{Name: "config", Done: true}, {Name: "services"}}}
	const timeout = time.Minute

	tests := []struct {
		name    string
		timeout time.Duration
		cancel  bool // the caller's ctx is cancelled at once
		// health answers call n (from 0); block means it waits for ctx.
		health      func(ctx context.Context, n int) (*proto.HealthResult, error)
		contact     error
		exitAfter   time.Duration // the VMM stops this long after the start; 0: never
		wantErr     error
		wantPending string
		wantCalls   int // 0: any
	}{
		{
			name: "a pending connection is not cut short",
			health: func(ctx context.Context, n int) (*proto.HealthResult, error) {
				// An attempt must be allowed the whole boot timeout: a guest
				// handshake under TCG outlasts any short per-attempt cut.
				d, ok := ctx.Deadline()
				if !ok || time.Until(d) < timeout-10*time.Second {
					return nil, errors.New("attempt deadline shorter than the boot timeout")
				}
				time.Sleep(50 * time.Millisecond)
				return ready, nil
			},
			wantCalls: 1,
		},
		{
			name: "retries fast failures until the agent listens",
			health: func(ctx context.Context, n int) (*proto.HealthResult, error) {
				if n < 5 {
					return nil, errRefused
				}
				return ready, nil
			},
			wantCalls: 6,
		},
		{
			name: "polls pending stages",
			health: func(ctx context.Context, n int) (*proto.HealthResult, error) {
				if n < 2 {
					return booting, nil
				}
				return ready, nil
			},
			wantPending: "services",
			wantCalls:   3,
		},
		{
			name: "VM exit ends a pending attempt",
			health: func(ctx context.Context, n int) (*proto.HealthResult, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
			exitAfter:   30 * time.Millisecond,
			wantErr:     errVMExited,
			wantPending: "agent connection",
		},
		{
			name:    "timeout",
			timeout: 50 * time.Millisecond,
			health: func(ctx context.Context, n int) (*proto.HealthResult, error) {
				return booting, nil
			},
			wantErr:     errNotReady,
			wantPending: "services",
		},
		{
			name:   "caller cancels",
			cancel: true,
			health: func(ctx context.Context, n int) (*proto.HealthResult, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
			wantErr: context.Canceled,
		},
		{
			name:    "first contact fails",
			health:  func(ctx context.Context, n int) (*proto.HealthResult, error) { return ready, nil },
			contact: errSecrets,
			wantErr: errSecrets,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				cancel()
			}
			start := time.Now()
			var calls atomic.Int32
			var pendings []string
			w := readyWait{
				health: func(ctx context.Context) (*proto.HealthResult, error) {
					return tt.health(ctx, int(calls.Add(1)-1))
				},
				contact: func(context.Context) error { return tt.contact },
				state: func(context.Context) (backend.State, error) {
					if tt.exitAfter > 0 && time.Since(start) > tt.exitAfter {
						return backend.StateStopped, nil
					}
					return backend.StateRunning, nil
				},
				pending: func(s string) { pendings = append(pendings, s) },
				log:     func(error) {},
			}
			to := tt.timeout
			if to == 0 {
				to = timeout
			}
			pending, err := w.run(ctx, to)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantPending != "" && pending != tt.wantPending {
				t.Errorf("pending = %q, want %q", pending, tt.wantPending)
			}
			if tt.wantCalls != 0 && int(calls.Load()) != tt.wantCalls {
				t.Errorf("%d health calls, want %d", calls.Load(), tt.wantCalls)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
}
