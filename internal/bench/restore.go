package bench

import (
	"context"
	"fmt"
	"time"
)

// RestoreNote is the restore figure's target: a restore still boots a
// fresh QEMU, so the answer to "exec in a new VM now" is a pool of VMs
// already restored (the pool figure).
const RestoreNote = "target: the warm pool (see the pool figure)"

// RestoreSnapshot is the snapshot Restore makes and leaves in the Env.
const RestoreSnapshot = "bench-snap"

// Restore measures `up --from-snapshot` → first exec against a cold up →
// first exec, interleaved, from a snapshot of a booted idle VM.
func (e *Env) Restore(ctx context.Context, o Options) (Figure, error) {
	const src = "restore-src"
	o.progress("restore: booting the VM to snapshot")
	if _, err := e.UpQEMU(ctx, src); err != nil {
		return Figure{}, err
	}
	o.progress("restore: snapshot create")
	if _, err := e.Run(ctx, upTimeout, "snapshot", "create", src, RestoreSnapshot); err != nil {
		return Figure{}, err
	}
	// The snapshot has its own disks; an idle guest would only add noise.
	if err := e.Remove(ctx, src); err != nil {
		return Figure{}, err
	}
	var coldT, restT []time.Duration
	for i := range o.N {
		o.progress(fmt.Sprintf("restore: run %d/%d: up --from-snapshot → exec", i+1, o.N))
		name := fmt.Sprintf("restore-%d", i)
		d, err := e.upExec(ctx, name, func() (time.Duration, error) {
			return e.UpQEMU(ctx, name, "--from-snapshot", RestoreSnapshot)
		})
		if err != nil {
			return Figure{}, err
		}
		restT = append(restT, d)
		if err := e.Remove(ctx, name); err != nil {
			return Figure{}, err
		}
		o.progress(fmt.Sprintf("restore: run %d/%d: cold up → exec", i+1, o.N))
		name = fmt.Sprintf("cold-%d", i)
		if d, err = e.upExec(ctx, name, func() (time.Duration, error) { return e.UpQEMU(ctx, name) }); err != nil {
			return Figure{}, err
		}
		coldT = append(coldT, d)
		if err := e.Remove(ctx, name); err != nil {
			return Figure{}, err
		}
	}
	return NewFigure("restore", NewSeries("up --from-snapshot → first exec OK", restT),
		NewSeries("cold up → first exec OK", coldT), 0, RestoreNote), nil
}
