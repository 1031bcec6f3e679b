// Package bench measures mvmctl against the raw engines beneath it, each
// figure next to its baseline taken in the same run, interleaved so both
// see the same host load: cold boot against raw QEMU, snapshot restore
// against cold boot, exec round trips against the agent's own and against
// docker exec. It drives a built mvmctl as a user does, one child process
// per call, inside its own temp directories (Env), and removes every VM it
// made on success, failure and interrupt alike.
package bench

import (
	"context"
	"errors"
	"fmt"
)

// Kind is one selectable benchmark.
type Kind string

// The benchmarks; Exec yields two figures (QEMU, Docker).
const (
	Boot    Kind = "boot"
	Restore Kind = "restore"
	Exec    Kind = "exec"
	Pool    Kind = "pool"
	Ls      Kind = "ls"
)

// Args are the arguments `mvmctl bench` accepts.
var Args = []string{string(Boot), string(Restore), string(Exec), string(Pool), string(Ls), "all"}

// ParseKinds maps bench's argument to what it runs; "" is all.
func ParseKinds(arg string) ([]Kind, error) {
	switch arg {
	case "", "all":
		return []Kind{Boot, Restore, Exec, Pool, Ls}, nil
	case string(Boot), string(Restore), string(Exec), string(Pool), string(Ls):
		return []Kind{Kind(arg)}, nil
	}
	return nil, fmt.Errorf("unknown benchmark %q: want boot, restore, exec, pool, ls or all", arg)
}

// ExecPerRun is how many exec round trips one iteration stands for: an
// exec costs a small fraction of a boot, and p99 wants many samples.
const ExecPerRun = 20

// Options tune a run.
type Options struct {
	Mvmctl string // the binary measured
	N      int    // iterations of each boot and restore
	ExecN  int    // exec round trips of each kind; 0: ExecPerRun·N
	// Progress receives one line per step; nil discards them.
	Progress func(msg string)
}

func (o Options) progress(msg string) {
	if o.Progress != nil {
		o.Progress(msg)
	}
}

// Run runs kinds in order in one Env and reports every figure. When ctx is
// cancelled (Ctrl-C) the mvmctl children are interrupted, every VM is
// removed, and the error is ctx's.
func Run(ctx context.Context, o Options, kinds []Kind) (rep *Report, err error) {
	if o.N < 1 {
		return nil, fmt.Errorf("iterations must be at least 1 (got %d)", o.N)
	}
	if o.ExecN < 1 {
		o.ExecN = ExecPerRun * o.N
	}
	e, err := NewEnv(o.Mvmctl)
	if err != nil {
		return nil, err
	}
	defer func() {
		o.progress("removing the bench's VMs and directories")
		if cerr := e.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("bench cleanup: %w", cerr))
		}
	}()
	rep = &Report{Mvmctl: o.Mvmctl, Iterations: o.N}
	for _, k := range kinds {
		if k == Exec {
			rep.ExecIterations = o.ExecN
		}
		var figs []Figure
		var f Figure
		switch k {
		case Boot:
			f, err = e.Boot(ctx, o)
			figs = append(figs, f)
		case Restore:
			f, err = e.Restore(ctx, o)
			figs = append(figs, f)
		case Pool:
			figs, err = e.Pool(ctx, o)
		case Ls:
			f, err = e.Ls(ctx, o)
			figs = append(figs, f)
		case Exec:
			if f, err = e.Exec(ctx, o); err == nil {
				figs = append(figs, f)
				f, err = e.DockerExec(ctx, o)
				figs = append(figs, f)
			}
		default:
			err = fmt.Errorf("unknown benchmark %q", k)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("bench %s: %w", k, err)
		}
		rep.Figures = append(rep.Figures, figs...)
	}
	rep.Accel = e.accel
	return rep, nil
}
