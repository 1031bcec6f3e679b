package bench

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/config"
	"github.com/mvm-dev/mvm/internal/vm"

	// The in-process baseline opens the VM through its backend.
	_ "github.com/mvm-dev/mvm/internal/backend/qemu"
)

// ExecNote says why the QEMU exec figure has no target: there is no raw
// exec into QEMU to hold it to, and the baseline is the floor mvmctl exec
// stands on, so the ratio is what the process, config and reconcile add.
const ExecNote = "no target: the ratio is what mvmctl adds to the agent round trip"

// AgentExec returns a function that runs argv once in VM name through m
// and times it, as `mvmctl exec` does it minus the process: a fresh
// connection, the mutual TLS handshake, the exec, its exit.
func AgentExec(ctx context.Context, m *vm.Manager, name string, argv []string) (func() (time.Duration, error), error) {
	c, err := m.Agent(ctx, name, "benchmark")
	if err != nil {
		return nil, err
	}
	req := proto.ExecRequest{Argv: argv}
	return func() (time.Duration, error) {
		t := time.Now()
		exit, err := c.Exec(ctx, req, nil, nil, nil)
		if err != nil {
			return 0, fmt.Errorf("agent exec %v: %w", argv, err)
		}
		if exit.Code != 0 {
			return 0, fmt.Errorf("agent exec %v: exit status %d", argv, exit.Code)
		}
		return time.Since(t), nil
	}, nil
}

// AgentRoundTrips times n runs of AgentExec after one untimed warm-up
// (page cache, first use of the TLS config).
func AgentRoundTrips(ctx context.Context, m *vm.Manager, name string, argv []string, n int) ([]time.Duration, error) {
	run, err := AgentExec(ctx, m, name, argv)
	if err != nil {
		return nil, err
	}
	if _, err := run(); err != nil {
		return nil, err
	}
	lat := make([]time.Duration, 0, n)
	for range n {
		d, err := run()
		if err != nil {
			return nil, err
		}
		lat = append(lat, d)
	}
	return lat, nil
}

// manager is an in-process vm.Manager on the Env's directories.
func (e *Env) manager() (*vm.Manager, error) {
	cfg, err := config.Load(e.Dirs.ConfigFile())
	if err != nil {
		return nil, err
	}
	return vm.New(e.Dirs, cfg, slog.New(slog.DiscardHandler)), nil
}

// Exec measures `mvmctl exec NAME -- true` on a running QEMU VM against
// the agent round trip it is built on, interleaved.
func (e *Env) Exec(ctx context.Context, o Options) (Figure, error) {
	const name = "exec-qemu"
	o.progress("exec: booting a QEMU VM")
	if _, err := e.UpQEMU(ctx, name); err != nil {
		return Figure{}, err
	}
	m, err := e.manager()
	if err != nil {
		return Figure{}, err
	}
	agent, err := AgentExec(ctx, m, name, []string{"true"})
	if err != nil {
		return Figure{}, err
	}
	mvmT, rawT, err := interleave(o, "exec (QEMU)",
		func() (time.Duration, error) { return e.ExecTrue(ctx, name) }, agent)
	if err != nil {
		return Figure{}, err
	}
	if err := e.Remove(ctx, name); err != nil {
		return Figure{}, err
	}
	return NewFigure("exec-qemu", NewSeries("mvmctl exec NAME -- true", mvmT),
		NewSeries("agent round trip in-process (dial, TLS, exec)", rawT), 0, ExecNote), nil
}

// interleave runs one untimed warm-up of a and b, then o.ExecN timed
// rounds of a then b, so both see the same host load.
func interleave(o Options, what string, a, b func() (time.Duration, error)) (at, bt []time.Duration, err error) {
	for _, f := range []func() (time.Duration, error){a, b} {
		if _, err := f(); err != nil {
			return nil, nil, err
		}
	}
	for i := range o.ExecN {
		if i%10 == 0 {
			o.progress(fmt.Sprintf("%s: round trip %d/%d", what, i+1, o.ExecN))
		}
		d, err := a()
		if err != nil {
			return nil, nil, err
		}
		at = append(at, d)
		if d, err = b(); err != nil {
			return nil, nil, err
		}
		bt = append(bt, d)
	}
	return at, bt, nil
}
