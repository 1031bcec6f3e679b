package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// PoolTarget is the pool hand-out's target: hand-out → first exec at most
// 3% of a cold up → first exec (under TCG, where a cold boot is seconds).
const PoolTarget = 0.03

// poolSize is the bench pool's size, the "pool of 3".
const poolSize = 3

// poolFillTimeout bounds waiting for the pool to refill between runs.
const poolFillTimeout = 10 * time.Minute

// Pool measures `up --pool` → first exec against a cold up → first exec
// and a local `up --from-snapshot` → first exec, interleaved. The pool is
// full before each hand-out and refilled before the baselines run, so no
// refill competes with what is timed but the hand-out's own.
func (e *Env) Pool(ctx context.Context, o Options) ([]Figure, error) {
	const src, snap, pool = "pool-src", "pool-snap", "bench-pool"
	o.progress("pool: booting the VM to snapshot")
	if _, err := e.UpQEMU(ctx, src); err != nil {
		return nil, err
	}
	if _, err := e.Run(ctx, upTimeout, "snapshot", "create", src, snap); err != nil {
		return nil, err
	}
	if err := e.Remove(ctx, src); err != nil {
		return nil, err
	}
	o.progress(fmt.Sprintf("pool: filling a pool of %d", poolSize))
	e.addPool(pool)
	if _, err := e.Run(ctx, upTimeout, "pool", "create", pool, "--from-snapshot", snap, "--size", fmt.Sprint(poolSize), "--backend", "qemu", "--wait"); err != nil {
		return nil, err
	}
	var poolT, coldT, restT []time.Duration
	for i := range o.N {
		if err := e.waitPool(ctx, pool); err != nil {
			return nil, err
		}
		o.progress(fmt.Sprintf("pool: run %d/%d: up --pool → exec", i+1, o.N))
		name := fmt.Sprintf("pooled-%d", i)
		d, err := e.upExec(ctx, name, func() (time.Duration, error) { return e.Up(ctx, name, "--pool", pool) })
		if err != nil {
			return nil, err
		}
		poolT = append(poolT, d)
		if err := e.Remove(ctx, name); err != nil {
			return nil, err
		}
		o.progress(fmt.Sprintf("pool: run %d/%d: waiting for the refill", i+1, o.N))
		if err := e.waitPool(ctx, pool); err != nil {
			return nil, err
		}
		o.progress(fmt.Sprintf("pool: run %d/%d: cold up → exec", i+1, o.N))
		name = fmt.Sprintf("pcold-%d", i)
		if d, err = e.upExec(ctx, name, func() (time.Duration, error) { return e.UpQEMU(ctx, name) }); err != nil {
			return nil, err
		}
		coldT = append(coldT, d)
		if err := e.Remove(ctx, name); err != nil {
			return nil, err
		}
		o.progress(fmt.Sprintf("pool: run %d/%d: up --from-snapshot → exec", i+1, o.N))
		name = fmt.Sprintf("prest-%d", i)
		if d, err = e.upExec(ctx, name, func() (time.Duration, error) { return e.UpQEMU(ctx, name, "--from-snapshot", snap) }); err != nil {
			return nil, err
		}
		restT = append(restT, d)
		if err := e.Remove(ctx, name); err != nil {
			return nil, err
		}
	}
	hand := NewSeries("up --pool → first exec OK", poolT)
	return []Figure{
		NewFigure("pool", hand, NewSeries("cold up → first exec OK", coldT), PoolTarget, ""),
		NewFigure("pool-vs-restore", hand, NewSeries("up --from-snapshot → first exec OK", restT), 0, "no target: how much a pool saves over a local restore"),
	}, nil
}

// waitPool waits until every member of the pool is ready.
func (e *Env) waitPool(ctx context.Context, pool string) error {
	deadline := time.Now().Add(poolFillTimeout)
	for {
		out, err := e.Run(ctx, opTimeout, "pool", "inspect", pool, "--json")
		if err != nil {
			return err
		}
		var st struct {
			Size, Ready, Warming int
			Refiller             int
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return fmt.Errorf("pool inspect: %w", err)
		}
		if st.Ready >= st.Size {
			return nil
		}
		if st.Refiller == 0 && st.Warming == 0 {
			return fmt.Errorf("pool %s: %d of %d ready and its refiller gave up (see its log under %s)", pool, st.Ready, st.Size, e.Dirs.State)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pool %s: %d of %d ready after %s", pool, st.Ready, st.Size, poolFillTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (e *Env) addPool(name string) {
	e.mu.Lock()
	e.pools = append(e.pools, name)
	e.mu.Unlock()
}
