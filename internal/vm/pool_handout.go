package vm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gofrs/flock"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/network"
	"github.com/mvm-dev/mvm/internal/store"
)

// poolQMPTimeout bounds a member's pause and resume (one QMP command).
const poolQMPTimeout = 10 * time.Second

// errMemberTaken: another hand-out (or the refiller's clean-up) got there
// first, or the member died; try the next.
var errMemberTaken = errors.New("pool member taken")

// poolConflicts names the flags a hand-out cannot honour: a member already
// runs with its pool's shape, network and backend.
func poolConflicts(o UpOptions) []string {
	var c []string
	if o.CPUs != 0 {
		c = append(c, "--cpus")
	}
	if o.MemoryMiB != 0 {
		c = append(c, "--memory")
	}
	if o.Network != "" {
		c = append(c, "--network")
	}
	if len(o.Publish) > 0 {
		c = append(c, "--publish")
	}
	if o.ConfigFile != "" {
		c = append(c, "--config")
	}
	if o.Image != "" {
		c = append(c, "--image")
	}
	if o.FromSnapshot != "" {
		c = append(c, "--from-snapshot")
	}
	return c
}

// upPooled is Up's first step: with --pool, or --template when a pool of
// that template exists and no flag asks for something a member does not
// have, hand out a member. handled false: take the normal path (o may
// have been pointed at the pool's template or snapshot).
func (m *Manager) upPooled(ctx context.Context, o *UpOptions, start time.Time) (rec *store.Record, handled bool, err error) {
	pool := o.Pool
	if pool == "" {
		if o.Template == "" || len(poolConflicts(*o)) > 0 {
			return nil, false, nil
		}
		if pool = m.PoolOf(o.Template); pool == "" {
			return nil, false, nil
		}
	} else if c := poolConflicts(*o); len(c) > 0 {
		return nil, true, fmt.Errorf("--pool cannot be combined with %v: a pool's members already run with its template's shape and network", c)
	}
	p, err := m.GetPool(pool)
	if err != nil {
		return nil, true, err
	}
	if o.Template != "" && p.Template != o.Template {
		from := "snapshot " + p.Snapshot
		if p.Template != "" {
			from = "template " + p.Template
		}
		return nil, true, fmt.Errorf("pool %s is made from %s, not template %s", p.Name, from, o.Template)
	}
	if p.Backend != "" && o.Backend != "" && o.Backend != p.Backend {
		if o.Pool != "" {
			return nil, true, fmt.Errorf("pool %s runs on %s, not %s", p.Name, p.Backend, o.Backend)
		}
		return nil, false, nil
	}
	if p.Removing {
		return nil, true, fmt.Errorf("pool %s is being removed", p.Name)
	}
	// Members wait without secrets; the template's are due at hand-out.
	if p.Template != "" {
		if t, err := m.Templates().Get(p.Template); err == nil {
			var missing []string
			for _, s := range t.Defaults.Secrets {
				if !slices.ContainsFunc(o.Secrets, func(x proto.Secret) bool { return x.Name == s }) {
					missing = append(missing, s)
				}
			}
			if len(missing) > 0 {
				return nil, true, fmt.Errorf("template %s expects secrets %s: give each with --secret NAME=@FILE or --secret NAME=env:VAR", t.Name, strings.Join(missing, ", "))
			}
		}
	}
	// Whatever happens, the pool refills behind this up.
	defer func() {
		if err := m.startRefiller(p.Name, handOutRefillDelay); err != nil {
			m.Log.Warn("cannot start the pool's refiller", "pool", p.Name, "err", err)
		}
	}()
	if o.Name == "" {
		o.Name = store.RandomName(m.Store.Exists)
	}
	if err := store.ValidateName(o.Name); err != nil {
		return nil, true, err
	}
	pr := &progress{fn: o.Progress, vm: o.Name, start: start}
	pm := m.poolVMs()
	members, err := m.poolMembers(p.Name)
	if err != nil {
		return nil, true, err
	}
	for _, r := range members {
		if !r.PoolReady || (o.Backend != "" && r.Backend != o.Backend) {
			continue
		}
		rec, err := m.handOut(ctx, pm, p, r.Name, *o, pr)
		if errors.Is(err, errMemberTaken) {
			continue
		}
		return rec, true, err
	}
	// Empty: restore the usual way from what the pool restores.
	pr.emit("pool", fmt.Sprintf("pool %s has no ready member; restoring", p.Name))
	m.Log.Info("pool empty, falling back", "pool", p.Name)
	o.Pool = ""
	if p.Template != "" {
		o.Template = p.Template
	} else {
		o.FromSnapshot = p.Snapshot
	}
	if o.Backend == "" {
		o.Backend = p.Backend
	}
	return nil, false, nil
}

// handOut gives member to the user as o.Name: the name adopts the
// member's directory, a second post-restore gives the guest its new
// hostname, clock, entropy and a fresh guest key (so no two hand-outs of
// one pool, nor a member and its template, share a key), then secrets.
func (m *Manager) handOut(ctx context.Context, pm *Manager, p *Pool, member string, o UpOptions, pr *progress) (*store.Record, error) {
	t0 := time.Now()
	ml := flock.New(pm.Store.LockPath(member))
	got, err := ml.TryLock()
	if err != nil || !got {
		return nil, errMemberTaken
	}
	defer ml.Unlock()
	cur, err := pm.Store.Get(member)
	if err != nil || cur.Name != member || cur.Pool != p.Name || !cur.PoolReady {
		return nil, errMemberTaken
	}
	h, err := pm.handle(cur)
	if err != nil {
		return nil, errMemberTaken
	}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	st, err := h.State(sctx)
	cancel()
	if err != nil || (st != backend.StateRunning && st != backend.StatePaused) {
		m.Log.Warn("pool member is not running; skipping it", "pool", p.Name, "member", member, "state", st, "err", err)
		return nil, errMemberTaken
	}
	unlock, err := m.Store.Lock(o.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rec := *cur
	rec.Name, rec.Pool, rec.PoolReady, rec.FromPool = o.Name, "", false, p.Name
	rec.State, rec.Reason = string(backend.StateStarting), ""
	rec.Created = time.Now().UTC()
	rec.Secrets = secretNames(o.Secrets)
	if p.Template != "" {
		rec.Template = p.Template
	}
	// From here the directory is the user's: its record names o.Name and
	// the pool no longer counts it.
	if err := m.Store.Adopt(&rec, cur.Dir); err != nil {
		return nil, err
	}
	pr.emit("pool", fmt.Sprintf("taking %s from pool %s", member, p.Name))
	if st == backend.StatePaused {
		pz, ok := h.(backend.Pauser)
		if !ok {
			return m.fail(&rec, backend.Unsupported(rec.Backend, "pause/resume"))
		}
		rctx, cancel := context.WithTimeout(ctx, poolQMPTimeout)
		err := pz.Resume(rctx)
		cancel()
		if err != nil {
			return m.fail(&rec, fmt.Errorf("resume pool member %s: %w", member, err))
		}
	}
	req := proto.PostRestoreRequest{Hostname: rec.Name}
	// The member keeps its address and MAC (its own since its restore,
	// never another VM's); the network now knows it by the user's name,
	// and the guest's hosts file says so.
	if n := rec.Net; n != nil && n.Network != network.ModeNone {
		if n.Network == network.ModeUser {
			req.Network = network.UserLease(rec.Name, nil).Guest()
		} else {
			lease, err := m.Networks().Rename(ctx, n.Network, member, rec.Name)
			if err != nil {
				return m.fail(&rec, fmt.Errorf("network: %w", err))
			}
			req.Network = lease.Guest()
		}
	}
	t1 := time.Now()
	res, err := m.postRestore(ctx, h, req, m.bootTimeout(o.BootTimeout))
	if err != nil {
		return m.fail(&rec, fmt.Errorf("hand-out of %s from pool %s: %w", member, p.Name, err))
	}
	if !res.Rekeyed {
		m.Log.Warn("the pool member kept its guest key", "vm", rec.Name, "pool", p.Name)
	}
	if len(o.Secrets) > 0 {
		if err := m.deliverSecrets(ctx, m.agentClient(h, rec.Name), rec.Name, o.Secrets, pr); err != nil {
			return m.fail(&rec, err)
		}
	}
	t2 := time.Now()
	rec.State = string(backend.StateRunning)
	rec.Started = time.Now().UTC()
	if err := m.Store.Put(&rec); err != nil {
		return nil, err
	}
	m.Log.Debug("hand-out", "vm", rec.Name, "member", member, "claim", t1.Sub(t0), "post_restore", t2.Sub(t1), "record", time.Since(t2))
	pr.emit("ready", fmt.Sprintf("%s is running (from pool %s in %.3fs)", rec.Name, p.Name, time.Since(pr.start).Seconds()))
	return &rec, nil
}
