package vm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gofrs/flock"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/store"
)

// A warm pool keeps Size VMs restored from a template's snapshot (or a
// snapshot), re-provisioned, their first exec already run, idle or paused, so
// `up --template T` or `up --pool P` hands one out with a second
// post-restore (new hostname, clock, entropy and keys) instead of a
// restore.
//
// Layout: the pool's record is <state>/pools/<name>.json (flock beside it);
// its members are ordinary VM records in a second store rooted at
// <state>/vms/.pool (hidden from `ls`, which skips dot entries), named
// <pool>-<8 hex>. A hand-out adopts the member's directory under the
// user's name (store.Adopt: a symlink, not a rename, because the running
// QEMU and supervisor hold absolute paths into it) and rewrites the record
// through it with Pool cleared, so the pool no longer counts it. The member
// store is the truth about members: a refiller killed at any point leaves
// records that `pool rm` (and the next refiller) find and remove.

// poolDirName is the member store under the VMs dir.
const poolDirName = ".pool"

// maxPoolName leaves room for a member's "-<8 hex>" in a 63-byte VM name.
const maxPoolName = 40

// Pool keeping modes: members wait running (the default: an idle minimal
// guest costs ~2% of a core under TCG, and a hand-out skips the resume and
// the guest's catch-up after it: ~110 ms to first exec here against ~180
// ms paused) or paused (no guest CPU at all, for big pools).
const (
	PoolKeepPaused  = "paused"
	PoolKeepRunning = "running"
)

// Pool is a warm pool's record.
type Pool struct {
	Name     string    `json:"name"`
	Template string    `json:"template,omitempty"`
	Snapshot string    `json:"snapshot,omitempty"`
	Size     int       `json:"size"`
	Keep     string    `json:"keep"`
	Backend  string    `json:"backend,omitempty"`
	Created  time.Time `json:"created"`
	// Removing is set by pool rm before it stops the refiller, so no
	// refiller started meanwhile adds a member.
	Removing bool `json:"removing,omitempty"`
}

// PoolStatus is a pool with what its members are doing now.
type PoolStatus struct {
	Pool
	Ready   int `json:"ready"`
	Warming int `json:"warming"`
	Failed  int `json:"failed"`
	// Refiller is the pid of the running refiller, 0 when none runs.
	Refiller int             `json:"refiller,omitempty"`
	Members  []*store.Record `json:"members,omitempty"`
}

// ErrPoolNotFound is returned for a pool with no record.
var ErrPoolNotFound = errors.New("no such pool")

func (m *Manager) poolsDir() string            { return filepath.Join(m.Dirs.State, "pools") }
func (m *Manager) poolFile(name string) string { return filepath.Join(m.poolsDir(), name+".json") }
func (m *Manager) poolLockPath(name string) string {
	return filepath.Join(m.poolsDir(), ".locks", name+".lock")
}

// PoolLog is the refiller's log of a pool.
func (m *Manager) PoolLog(name string) string { return filepath.Join(m.poolsDir(), name+".log") }

func (m *Manager) refillLockPath(name string) string {
	return filepath.Join(m.poolsDir(), ".locks", name+".refill")
}
func (m *Manager) refillPidFile(name string) string {
	return filepath.Join(m.poolsDir(), name+".refill.pid")
}

// poolVMs is a Manager over the member store: every verb (Up, Exec, Pause,
// Remove) works on members unchanged, by member name.
func (m *Manager) poolVMs() *Manager {
	c := *m
	c.Store = store.New(filepath.Join(m.Dirs.VMsDir(), poolDirName))
	return &c
}

// ValidatePoolName checks a pool name: a VM name short enough to prefix
// its members' names.
func ValidatePoolName(name string) error {
	if err := store.ValidateName(name); err != nil {
		return fmt.Errorf("pool name: %w", err)
	}
	if len(name) > maxPoolName {
		return fmt.Errorf("pool name %q: %d characters, at most %d allowed", name, len(name), maxPoolName)
	}
	return nil
}

func lockFile(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	l := flock.New(path)
	if err := l.Lock(); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { _ = l.Unlock() }, nil
}

func (m *Manager) lockPool(name string) (func(), error) {
	if err := ValidatePoolName(name); err != nil {
		return nil, err
	}
	return lockFile(m.poolLockPath(name))
}

func (m *Manager) putPool(p *Pool) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(m.poolsDir(), 0o700); err != nil {
		return err
	}
	return store.WriteFileAtomic(m.poolFile(p.Name), append(b, '\n'), 0o600)
}

// GetPool reads a pool's record.
func (m *Manager) GetPool(name string) (*Pool, error) {
	if err := ValidatePoolName(name); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(m.poolFile(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q (see 'mvmctl pool ls')", ErrPoolNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read pool %s: %w", name, err)
	}
	var p Pool
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("pool %s: corrupt record %s: %w (remove it with 'mvmctl pool rm %s')", name, m.poolFile(name), err, name)
	}
	return &p, nil
}

// PoolCreateOptions are the inputs of PoolCreate.
type PoolCreateOptions struct {
	Name     string
	Template string
	Snapshot string
	Size     int
	Keep     string
	Backend  string
	// Wait returns only once every member is ready (or one failed).
	Wait        time.Duration
	BootTimeout time.Duration
}

// maxPoolSize bounds a pool: each member holds its RAM.
const maxPoolSize = 64

// PoolCreate records a pool and starts its refiller.
func (m *Manager) PoolCreate(ctx context.Context, o PoolCreateOptions) (*PoolStatus, error) {
	if err := ValidatePoolName(o.Name); err != nil {
		return nil, err
	}
	if (o.Template == "") == (o.Snapshot == "") {
		return nil, errors.New("a pool is made from exactly one of --template or --from-snapshot")
	}
	if o.Size < 1 || o.Size > maxPoolSize {
		return nil, fmt.Errorf("--size %d: must be between 1 and %d", o.Size, maxPoolSize)
	}
	switch o.Keep {
	case "":
		o.Keep = PoolKeepRunning
	case PoolKeepPaused, PoolKeepRunning:
	default:
		return nil, fmt.Errorf("--keep %q: use %s or %s", o.Keep, PoolKeepPaused, PoolKeepRunning)
	}
	if o.Template != "" {
		t, err := m.Templates().Get(o.Template)
		if err != nil {
			return nil, err
		}
		// Every member would publish them while it waits: the second clashes.
		if len(t.Defaults.Publish) > 0 {
			return nil, fmt.Errorf("template %s publishes ports (%s): its members would clash on them; a pool needs a template without -p defaults", t.Name, strings.Join(t.Defaults.Publish, ", "))
		}
	} else if _, err := m.GetSnapshot(o.Snapshot); err != nil {
		return nil, err
	}
	unlock, err := m.lockPool(o.Name)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(m.poolFile(o.Name)); err == nil {
		unlock()
		return nil, fmt.Errorf("pool %q already exists (see 'mvmctl pool inspect %s', or remove it with 'mvmctl pool rm %s')", o.Name, o.Name, o.Name)
	}
	p := &Pool{Name: o.Name, Template: o.Template, Snapshot: o.Snapshot, Size: o.Size, Keep: o.Keep, Backend: o.Backend, Created: time.Now().UTC()}
	err = m.putPool(p)
	unlock()
	if err != nil {
		return nil, err
	}
	if err := m.startRefiller(o.Name, 0); err != nil {
		return nil, fmt.Errorf("pool %s: start its refiller: %w", o.Name, err)
	}
	if o.Wait > 0 {
		if err := m.waitPoolFull(ctx, o.Name, o.Wait); err != nil {
			return nil, err
		}
	}
	return m.PoolInspect(ctx, o.Name)
}

// refillerStartGrace is how long a pool may show no refiller before a
// wait for it gives up.
const refillerStartGrace = 5 * time.Second

// waitPoolFull waits until every member of a pool is ready.
func (m *Manager) waitPoolFull(ctx context.Context, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	// A refiller just started has not written its pid file yet.
	idleSince := time.Now()
	for {
		st, err := m.PoolInspect(ctx, name)
		if err != nil {
			return err
		}
		if st.Ready >= st.Size {
			return nil
		}
		if st.Refiller != 0 || st.Warming > 0 {
			idleSince = time.Now()
		}
		if time.Since(idleSince) > refillerStartGrace {
			return fmt.Errorf("pool %s: %d of %d members ready and no refiller runs; see %s", name, st.Ready, st.Size, m.PoolLog(name))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pool %s: %d of %d members ready after %s; see %s", name, st.Ready, st.Size, timeout, m.PoolLog(name))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// memberName makes a fresh member name of a pool.
func memberName(pool string) (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return pool + "-" + hex.EncodeToString(b[:]), nil
}

// isMemberName says whether a member directory's name belongs to pool; an
// interrupted create leaves a directory with no record to ask.
func isMemberName(pool, dir string) bool {
	rest, ok := strings.CutPrefix(dir, pool+"-")
	if !ok || len(rest) != 8 {
		return false
	}
	_, err := hex.DecodeString(rest)
	return err == nil
}

// poolMembers lists a pool's members (not yet handed out), oldest first.
func (m *Manager) poolMembers(pool string) ([]*store.Record, error) {
	pm := m.poolVMs()
	recs, err := pm.Store.List()
	if err != nil {
		return nil, err
	}
	var out []*store.Record
	for _, r := range recs {
		base := filepath.Base(r.Dir)
		if r.Name != base {
			continue // handed out: the user's VM now
		}
		if r.Pool == pool || (r.Pool == "" && isMemberName(pool, base)) {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// memberBusy says whether a refiller is making the member.
func (m *Manager) memberBusy(name string) bool {
	if _, err := os.Stat(m.makeLockPath(name)); err != nil {
		return false
	}
	l := flock.New(m.makeLockPath(name))
	got, err := l.TryLock()
	if err != nil || !got {
		return true
	}
	_ = l.Unlock()
	return false
}

// memberState classifies a member: ready, warming (being made), or failed
// (nobody is making it and it is not ready: a dead refiller's leftover).
func (m *Manager) memberState(ctx context.Context, pm *Manager, r *store.Record) string {
	if r.PoolReady && (r.State == string(backend.StatePaused) || r.State == string(backend.StateRunning)) {
		pm.reconcile(ctx, r)
		if r.State == string(backend.StatePaused) || r.State == string(backend.StateRunning) {
			return "ready"
		}
		return "failed"
	}
	if m.memberBusy(r.Name) {
		return "warming"
	}
	return "failed"
}

// PoolInspect returns a pool with its members.
func (m *Manager) PoolInspect(ctx context.Context, name string) (*PoolStatus, error) {
	p, err := m.GetPool(name)
	if err != nil {
		return nil, err
	}
	st := &PoolStatus{Pool: *p, Refiller: m.refillerPID(name)}
	pm := m.poolVMs()
	members, err := m.poolMembers(name)
	if err != nil {
		return nil, err
	}
	for _, r := range members {
		switch m.memberState(ctx, pm, r) {
		case "ready":
			st.Ready++
		case "warming":
			st.Warming++
		default:
			st.Failed++
		}
	}
	st.Members = members
	return st, nil
}

// PoolList returns every pool, sorted by name.
func (m *Manager) PoolList(ctx context.Context) ([]*PoolStatus, error) {
	ents, err := os.ReadDir(m.poolsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	var out []*PoolStatus
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || ValidatePoolName(name) != nil {
			continue
		}
		st, err := m.PoolInspect(ctx, name)
		if err != nil {
			if errors.Is(err, ErrPoolNotFound) {
				continue // removed while listing
			}
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// PoolRemove removes a pool: its refiller, every member it has (whatever
// state a crash left them in) and its record. VMs already handed out are
// the users' and stay.
func (m *Manager) PoolRemove(ctx context.Context, name string) error {
	unlock, err := m.lockPool(name)
	if err != nil {
		return err
	}
	defer unlock()
	p, err := m.GetPool(name)
	if err != nil && !errors.Is(err, ErrPoolNotFound) {
		// A corrupt record: remove what the pool owns all the same.
		p = &Pool{Name: name}
	} else if err != nil {
		if ms, _ := m.poolMembers(name); len(ms) == 0 {
			return err
		}
		p = &Pool{Name: name} // leftovers of a pool removed half-way
	}
	if _, serr := os.Stat(m.poolFile(name)); serr == nil {
		p.Removing = true
		if err := m.putPool(p); err != nil {
			return err
		}
	}
	release, err := m.stopRefiller(ctx, name)
	if err != nil {
		return err
	}
	defer release()
	members, err := m.poolMembers(name)
	if err != nil {
		return err
	}
	pm := m.poolVMs()
	var errs []error
	for _, r := range members {
		if err := retireMember(pm, r.Name); err != nil {
			if !errors.Is(err, errMemberTaken) {
				errs = append(errs, err)
			}
			continue
		}
		if err := pm.Remove(ctx, r.Name, true); err != nil && !errors.Is(err, store.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pool %s: %w", name, err)
	}
	for _, f := range []string{m.poolFile(name), m.refillPidFile(name), m.PoolLog(name)} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	_ = os.Remove(m.refillLockPath(name))
	_ = os.Remove(m.poolLockPath(name)) // as store.Remove does a VM's
	return nil
}

// PooledCount is how many directories the member store holds that are
// not handed out (cheap: no VMM is asked).
func (m *Manager) PooledCount() int {
	pm := m.poolVMs()
	recs, _ := pm.Store.List()
	n := 0
	for _, r := range recs {
		if r.Name == filepath.Base(r.Dir) {
			n++
		}
	}
	return n
}

// VMExists says whether name is a VM: the user's, or a pool's member
// (network reconciliation must not detach members).
func (m *Manager) VMExists(name string) bool {
	return m.Store.Exists(name) || m.poolVMs().Store.Exists(name)
}

// retireMember takes a member out of hand-outs' reach before it is
// removed: under its lock, it is either already handed out (errMemberTaken:
// the user's now, not to be touched) or marked not ready, which every
// hand-out checks under the same lock.
func retireMember(pm *Manager, name string) error {
	unlock, err := pm.Store.Lock(name)
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := pm.Store.Get(name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if cur.Name != filepath.Base(cur.Dir) {
		return errMemberTaken
	}
	if cur.PoolReady {
		cur.PoolReady = false
		return pm.Store.Put(cur)
	}
	return nil
}

// PoolOf returns the name of a pool made from template tpl, "" if none.
func (m *Manager) PoolOf(tpl string) string {
	ents, _ := os.ReadDir(m.poolsDir())
	var names []string
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			if p, err := m.GetPool(name); err == nil && p.Template == tpl && !p.Removing {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// poolUsers lists the pools that restore from template tpl (template
// delete keeps a template while a pool uses it).
func (m *Manager) poolUsers(tpl string) []string {
	return m.poolsWhere(func(p *Pool) bool { return p.Template == tpl })
}

// poolsWhere names ("pool NAME") the pools for which keep is true.
func (m *Manager) poolsWhere(keep func(*Pool) bool) []string {
	ents, _ := os.ReadDir(m.poolsDir())
	var out []string
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			if p, err := m.GetPool(name); err == nil && keep(p) {
				out = append(out, "pool "+name)
			}
		}
	}
	return out
}
