package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/paths"
	"github.com/mvm-dev/mvm/internal/store"
)

// LsTarget is the most `ls` over LsRecords VMs may cost over one VM.
const LsTarget = 2.0

// LsRecords is how many VM records the large listing holds.
const LsRecords = 200

// lsPerRun is how many listings one iteration stands for (each is ~20 ms).
const lsPerRun = 10

// Ls times `mvmctl ls -a --json` over LsRecords stopped VM records against
// the same over one, interleaved, each in a state directory of its own.
// The records are written as up writes them; listing stopped VMs reads
// every record without asking a VMM, which is what grows with their number.
func (e *Env) Ls(ctx context.Context, o Options) (Figure, error) {
	small, err := e.lsState("ls-1", 1)
	if err != nil {
		return Figure{}, err
	}
	large, err := e.lsState(fmt.Sprintf("ls-%d", LsRecords), LsRecords)
	if err != nil {
		return Figure{}, err
	}
	var one, many []time.Duration
	for i := range o.N * lsPerRun {
		if i%lsPerRun == 0 {
			o.progress(fmt.Sprintf("ls: run %d/%d", i/lsPerRun+1, o.N))
		}
		d, err := e.timedIn(ctx, small, "ls", "-a", "--json")
		if err != nil {
			return Figure{}, err
		}
		one = append(one, d)
		if d, err = e.timedIn(ctx, large, "ls", "-a", "--json"); err != nil {
			return Figure{}, err
		}
		many = append(many, d)
	}
	return NewFigure("ls", NewSeries(fmt.Sprintf("mvmctl ls, %d VMs", LsRecords), many),
		NewSeries("mvmctl ls, 1 VM", one), LsTarget, ""), nil
}

// lsState makes a state directory holding n stopped VM records.
func (e *Env) lsState(name string, n int) (string, error) {
	state := e.Path(name)
	d := paths.Dirs{State: state}
	st := store.New(d.VMsDir())
	for i := range n {
		vm := fmt.Sprintf("ls-%03d", i)
		rec := &store.Record{Name: vm, State: "stopped", Backend: "qemu", Image: "minimal", CPUs: 1, MemoryMiB: 256,
			Created: time.Now().UTC(), Dir: filepath.Join(d.VMsDir(), vm), Sources: map[string]string{"image": "default"}}
		if err := os.MkdirAll(rec.Dir, 0o700); err != nil {
			return "", err
		}
		if err := st.Put(rec); err != nil {
			return "", err
		}
	}
	return state, nil
}

// timedIn is Timed with MVM_STATE_DIR set to state.
func (e *Env) timedIn(ctx context.Context, state string, args ...string) (time.Duration, error) {
	env := make([]string, 0, len(e.env))
	for _, kv := range e.env {
		if !strings.HasPrefix(kv, "MVM_STATE_DIR=") {
			env = append(env, kv)
		}
	}
	sub := &Env{Mvmctl: e.Mvmctl, Dirs: e.Dirs, root: e.root, env: append(env, "MVM_STATE_DIR="+state)}
	return sub.Timed(ctx, opTimeout, args...)
}
