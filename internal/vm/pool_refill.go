package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/store"
)

// handOutRefillDelay is how long a refiller started by a hand-out waits
// before it restores: the user's first exec follows the hand-out at once,
// and a restore (a QEMU start, a guest waking) beside it would slow it on a
// small host.
const handOutRefillDelay = time.Second

// startRefiller runs `mvmctl pool refill NAME` detached (own session, no
// terminal, output to the pool's log) and does not wait for it: it exits
// once the pool is full, and a second one started meanwhile exits at once.
func (m *Manager) startRefiller(name string, delay time.Duration) error {
	exe, err := m.mvmctl()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(m.poolsDir(), 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(m.PoolLog(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, "-v", "pool", "refill", name, "--delay", delay.String())
	cmd.Env = os.Environ()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}

// refillerPID is the pid of the pool's running refiller, 0 when none runs.
// The pid file is checked against the process's command line, so a reused
// pid is never taken for the refiller.
func (m *Manager) refillerPID(name string) int {
	b, err := os.ReadFile(m.refillPidFile(name))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	cl, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil || !bytes.Contains(cl, []byte("\x00pool\x00refill\x00"+name+"\x00")) {
		return 0
	}
	return pid
}

// refillStopWait bounds how long pool rm waits for a refiller to die.
const refillStopWait = 30 * time.Second

// stopRefiller kills the pool's refiller (it keeps nothing worth a
// graceful stop: its half-made member is removed with the rest) and takes
// the refill lock, so no refiller runs until release.
func (m *Manager) stopRefiller(ctx context.Context, name string) (release func(), err error) {
	if err := os.MkdirAll(filepath.Dir(m.refillLockPath(name)), 0o700); err != nil {
		return nil, err
	}
	l := flock.New(m.refillLockPath(name))
	deadline := time.Now().Add(refillStopWait)
	for {
		got, err := l.TryLock()
		if err != nil {
			return nil, fmt.Errorf("pool %s: refill lock: %w", name, err)
		}
		if got {
			return func() { _ = l.Unlock() }, nil
		}
		if pid := m.refillerPID(name); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("pool %s: its refiller still holds %s after %s", name, m.refillLockPath(name), refillStopWait)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// makeLockPath is held by the refiller for a member's whole making (the
// member's own lock is taken and released by the verbs it calls), so
// inspect tells a member being made from a dead refiller's leftover.
func (m *Manager) makeLockPath(member string) string {
	return filepath.Join(m.poolsDir(), ".locks", member+".make")
}

// refillMaxFailures in a row stop a refiller: a pool that cannot make a
// member (template gone, host full) should not spin.
const refillMaxFailures = 3

// PoolRefill is the refiller's body: remove dead members, add members
// until the pool is full, exit. Only one runs per pool (a flock); a second
// returns at once.
func (m *Manager) PoolRefill(ctx context.Context, name string, delay time.Duration) error {
	if err := ValidatePoolName(name); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(m.refillLockPath(name)), 0o700); err != nil {
		return err
	}
	for {
		l := flock.New(m.refillLockPath(name))
		got, err := l.TryLock()
		if err != nil {
			return fmt.Errorf("pool %s: refill lock: %w", name, err)
		}
		if !got {
			m.Log.Debug("another refiller runs", "pool", name)
			return nil
		}
		err = m.refillLocked(ctx, name, delay)
		_ = l.Unlock()
		if err != nil {
			return err
		}
		// A hand-out whose refiller found the lock held, and left, took its
		// member before that: a count now, unlocked, sees it.
		if !m.poolShort(ctx, name) {
			return nil
		}
		delay = 0
	}
}

// poolShort says whether a pool (not being removed) has fewer live
// members than its size.
func (m *Manager) poolShort(ctx context.Context, name string) bool {
	p, err := m.GetPool(name)
	if err != nil || p.Removing {
		return false
	}
	members, err := m.poolMembers(name)
	if err != nil {
		return false
	}
	pm, live := m.poolVMs(), 0
	for _, r := range members {
		if m.memberState(ctx, pm, r) != "failed" {
			live++
		}
	}
	return live < p.Size
}

// refillLocked fills the pool; the caller holds the refill lock.
func (m *Manager) refillLocked(ctx context.Context, name string, delay time.Duration) error {
	pidText := strconv.Itoa(os.Getpid())
	if err := store.WriteFileAtomic(m.refillPidFile(name), []byte(pidText+"\n"), 0o600); err != nil {
		return err
	}
	defer func() {
		if b, err := os.ReadFile(m.refillPidFile(name)); err == nil && strings.TrimSpace(string(b)) == pidText {
			os.Remove(m.refillPidFile(name))
		}
	}()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(delay):
	}
	pm := m.poolVMs()
	failures := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := m.GetPool(name)
		if errors.Is(err, ErrPoolNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if p.Removing {
			return nil
		}
		members, err := m.poolMembers(name)
		if err != nil {
			return err
		}
		live := 0
		for _, r := range members {
			if m.memberState(ctx, pm, r) != "failed" {
				live++
				continue
			}
			m.Log.Info("removing a dead pool member", "pool", name, "member", r.Name, "state", r.State, "reason", r.Reason)
			if err := retireMember(pm, r.Name); err != nil {
				if errors.Is(err, errMemberTaken) {
					continue // handed out meanwhile: the user's now
				}
				return fmt.Errorf("pool %s: remove dead member %s: %w", name, r.Name, err)
			}
			if err := pm.Remove(ctx, r.Name, true); err != nil && !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("pool %s: remove dead member %s: %w", name, r.Name, err)
			}
		}
		if live >= p.Size {
			m.Log.Info("pool full", "pool", name, "size", p.Size)
			return nil
		}
		start := time.Now()
		member, err := m.addMember(ctx, pm, p)
		if err != nil {
			failures++
			m.Log.Error("pool member failed", "pool", name, "member", member, "err", err, "failures", failures)
			if failures >= refillMaxFailures {
				return fmt.Errorf("pool %s: %w", name, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(failures) * time.Second):
			}
			continue
		}
		failures = 0
		m.Log.Info("pool member ready", "pool", name, "member", member, "seconds", time.Since(start).Seconds())
	}
}

// addMember makes one member: restore (post-restore gives it its own keys
// and the user's host key), the first exec (warms the agent's exec path
// and the guest's page cache for it), pause when the pool keeps members
// paused, then marks it ready.
func (m *Manager) addMember(ctx context.Context, pm *Manager, p *Pool) (string, error) {
	id, err := memberName(p.Name)
	if err != nil {
		return "", err
	}
	unlock, err := lockFile(m.makeLockPath(id))
	if err != nil {
		return id, err
	}
	defer func() {
		unlock()
		os.Remove(m.makeLockPath(id))
	}()
	o := UpOptions{Name: id, Backend: p.Backend, memberOf: p.Name}
	if p.Template != "" {
		o.Template = p.Template
	} else {
		o.FromSnapshot = p.Snapshot
	}
	fail := func(err error) (string, error) {
		if rerr := pm.Remove(context.WithoutCancel(ctx), id, true); rerr != nil && !errors.Is(rerr, store.ErrNotFound) {
			err = errors.Join(err, rerr)
		}
		return id, err
	}
	if _, err := pm.Up(ctx, o); err != nil {
		return fail(err)
	}
	xctx, cancel := context.WithTimeout(ctx, time.Minute)
	exit, err := pm.Exec(xctx, id, proto.ExecRequest{Argv: []string{"true"}}, nil, io.Discard, io.Discard)
	cancel()
	if err != nil {
		return fail(fmt.Errorf("first exec: %w", err))
	}
	if exit.Code != 0 {
		return fail(fmt.Errorf("first exec: 'true' exited %d", exit.Code))
	}
	if p.Keep == PoolKeepPaused {
		pctx, cancel := context.WithTimeout(ctx, poolQMPTimeout)
		_, err := pm.Pause(pctx, id)
		cancel()
		if err != nil {
			return fail(err)
		}
	}
	ulock, err := pm.Store.Lock(id)
	if err != nil {
		return fail(err)
	}
	defer ulock()
	cur, err := pm.Store.Get(id)
	if err != nil {
		return fail(err)
	}
	cur.PoolReady = true
	if err := pm.Store.Put(cur); err != nil {
		return fail(err)
	}
	return id, nil
}
