package vm

import (
	"context"
	"errors"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/backend"
)

var (
	errVMExited = errors.New("the VM exited")
	errNotReady = errors.New("the guest is not ready")
)

// Pauses of readyWait; variables so tests can shorten them.
var (
	// retryPause follows a failed attempt that failed fast (nothing listens
	// yet: vsock, unix). A pending connection (the QEMU relay) needs none:
	// it completes the moment the agent opens its port.
	retryPause = 20 * time.Millisecond
	// stagePause is between health calls while guest stages are pending.
	stagePause = 50 * time.Millisecond
	// exitPoll is how often the VMM is checked for an early exit. Not
	// often: a QEMU state check is a QMP session, served by the thread the
	// booting guest's device I/O needs too.
	exitPoll = time.Second
)

// readyWait is the loop of waitReady with its dependencies as functions.
type readyWait struct {
	health  func(context.Context) (*proto.HealthResult, error)
	contact func(context.Context) error // once the agent first answers
	state   func(context.Context) (backend.State, error)
	pending func(stage string) // a health answer with this stage not done
	log     func(error)        // a failed attempt
}

// run returns nil once health says ready; errVMExited or errNotReady (with
// the stage pending then), or ctx's error, otherwise.
//
// Every attempt may take all the time left: a health call cut short by a
// per-attempt timeout wastes the guest's (cold, slow under TCG) TLS
// handshake it has started, and the dropped connection still reaches the
// guest, which handshakes it for nobody before it gets to the next one. An
// early VMM exit is watched for meanwhile and ends the wait.
func (w readyWait) run(ctx context.Context, timeout time.Duration) (pending string, err error) {
	pending = "agent connection"
	ctx, cancelDeadline := context.WithTimeoutCause(ctx, timeout, errNotReady)
	defer cancelDeadline()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go w.watchExit(ctx, cancel)
	for {
		hr, err := w.health(ctx)
		if ctx.Err() != nil {
			return pending, context.Cause(ctx)
		}
		pause := retryPause
		if err == nil {
			// The agent answers: what must reach it before the guest can
			// be ready (secrets) goes now.
			if err := w.contact(ctx); err != nil {
				if ctx.Err() != nil {
					return pending, context.Cause(ctx)
				}
				return pending, err
			}
			if hr.Ready {
				return pending, nil
			}
			for _, s := range hr.Stages {
				if !s.Done {
					pending = s.Name
					break
				}
			}
			w.pending(pending)
			pause = stagePause
		} else {
			w.log(err)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return pending, context.Cause(ctx)
		case <-t.C:
		}
	}
}

// watchExit cancels ctx with errVMExited once the VMM has stopped or failed.
func (w readyWait) watchExit(ctx context.Context, cancel context.CancelCauseFunc) {
	t := time.NewTicker(exitPoll)
	defer t.Stop()
	for {
		sctx, c := context.WithTimeout(ctx, 3*time.Second)
		st, err := w.state(sctx)
		c()
		if err == nil && (st == backend.StateStopped || st == backend.StateFailed) {
			cancel(errVMExited)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
