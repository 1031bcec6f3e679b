package vm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/image"
	"github.com/mvm-dev/mvm/internal/network"
	"github.com/mvm-dev/mvm/internal/store"
)

// upFromSnapshot makes a new VM from a snapshot: its own directory, disk
// overlay and config drive, then re-provisions the guest (clock, entropy,
// hostname) through the agent, so clones of one snapshot never collide.
func (m *Manager) upFromSnapshot(ctx context.Context, o UpOptions, start time.Time) (*store.Record, error) {
	var s *Snapshot
	var err error
	if o.snapshotDir != "" {
		s, err = readSnapshotAt(o.snapshotDir)
	} else {
		s, err = m.GetSnapshot(o.FromSnapshot)
	}
	if err != nil {
		return nil, err
	}
	if !s.Complete {
		return nil, fmt.Errorf("snapshot %q is incomplete (interrupted while saving); remove it with 'mvmctl snapshot rm %s'", s.Name, s.Name)
	}
	if o.Name == "" {
		o.Name = store.RandomName(m.Store.Exists)
	}
	if err := store.ValidateName(o.Name); err != nil {
		return nil, err
	}
	p := &progress{fn: o.Progress, vm: o.Name, start: start}
	be, err := backend.Get(s.Backend)
	if err != nil {
		return nil, err
	}
	if o.Backend != "" && o.Backend != s.Backend {
		return nil, fmt.Errorf("snapshot %q was made on backend %s and restores only there, not on %s", s.Name, s.Backend, o.Backend)
	}
	r, ok := be.(backend.Restorer)
	if !ok || !be.Capabilities().Snapshot {
		return nil, backend.Unsupported(s.Backend, "restore from snapshot")
	}
	// The machine shape is part of the saved state.
	if o.CPUs > 0 && o.CPUs != s.CPUs {
		p.emit("warning", fmt.Sprintf("snapshot has %d vCPUs; ignoring --cpus %d", s.CPUs, o.CPUs))
		m.Log.Warn("ignoring --cpus for a restored VM", "snapshot_cpus", s.CPUs, "requested", o.CPUs)
	}
	if o.MemoryMiB > 0 && o.MemoryMiB != s.MemoryMiB {
		p.emit("warning", fmt.Sprintf("snapshot has %d MiB; ignoring --memory %d MiB", s.MemoryMiB, o.MemoryMiB))
		m.Log.Warn("ignoring --memory for a restored VM", "snapshot_memory_mib", s.MemoryMiB, "requested", o.MemoryMiB)
	}
	if o.Image != "" && o.Image != s.Image {
		m.Log.Warn("ignoring --image for a restored VM", "snapshot_image", s.Image, "requested", o.Image)
	}
	rec := &store.Record{
		Name: o.Name, State: string(backend.StateCreating), Backend: s.Backend,
		Image: s.Image, ImageDigest: s.ImageDigest, Created: time.Now().UTC(),
		CPUs: s.CPUs, MemoryMiB: s.MemoryMiB, Boot: s.Boot, Snapshot: s.Name, Template: o.Template, Pool: o.memberOf,
		Sources: map[string]string{"image": SourceSnapshot, "backend": SourceSnapshot, "cpus": SourceSnapshot, "memory_mib": SourceSnapshot},
	}
	if o.snapshotDir != "" {
		rec.Snapshot = "" // a template's; the template records the link
	}
	netName := o.Network
	if netName == "" {
		netName = s.Network
	}
	if netName == "" {
		netName = "none"
	}
	if err := planNet(rec, netName, o.Publish, be); err != nil {
		return nil, err
	}
	// The snapshot holds no secrets (snapshot create drops them first).
	rec.Secrets = secretNames(o.Secrets)
	if len(s.DroppedSecrets) > 0 && len(o.Secrets) == 0 {
		msg := fmt.Sprintf("snapshot %s was saved without its secrets (%s); %s gets none unless given with --secret", s.Name, strings.Join(s.DroppedSecrets, ", "), rec.Name)
		p.emit("warning", msg)
		m.Log.Warn(msg)
	}
	unlock, err := m.create(rec)
	if err != nil {
		return nil, err
	}
	defer unlock()

	// The clone wakes up with the snapshot's keys in memory: its guest key,
	// and a template's bootstrap host key; post-restore replaces both.
	if err := copyGuestPin(s.Dir, rec.Dir); err != nil {
		return m.fail(rec, fmt.Errorf("snapshot %s: %w", s.Name, err))
	}
	if err := copyBootstrapKey(s.Dir, rec.Dir); err != nil {
		return m.fail(rec, fmt.Errorf("snapshot %s: %w", s.Name, err))
	}
	// The clone's guest never reads a config drive (its identity comes by
	// post-restore below); `start` after a stop writes a real one.
	cfgPath := filepath.Join(rec.Dir, configDriveFile)
	if err := image.WriteConfigPlaceholder(cfgPath); err != nil {
		return m.fail(rec, err)
	}
	rec.State = string(backend.StateStarting)
	if err := m.Store.Put(rec); err != nil {
		return nil, err
	}
	p.emit("restore", "restoring from snapshot "+s.Name)
	spec := backend.Spec{Name: rec.Name, Dir: rec.Dir, ConfigISO: cfgPath, SerialLog: m.SerialLog(rec.Name)}
	// Its own address and MAC on the network; the agent takes them on in
	// post-restore.
	lease, err := m.attachNet(ctx, rec, &spec)
	if err != nil {
		return m.fail(rec, fmt.Errorf("network: %w", err))
	}
	tap := ""
	if lease != nil && lease.Attach.TAP != "" {
		tap = lease.Attach.TAP
		if err := network.SetLinkUp(tap, false); err != nil {
			return m.fail(rec, fmt.Errorf("network: %w", err))
		}
	}
	h, err := r.Restore(ctx, spec, s.Dir)
	if err != nil {
		return m.fail(rec, err)
	}
	if pr, ok := h.(interface{ PID() int }); ok {
		rec.PID = pr.PID()
	}
	rec.Started = time.Now().UTC()
	_ = m.Store.Put(rec)
	p.emit("agent", "re-provisioning the guest")
	req := proto.PostRestoreRequest{Hostname: rec.Name}
	if lease != nil {
		req.Network = lease.Guest()
	}
	res, err := m.postRestore(ctx, h, req, m.bootTimeout(o.BootTimeout))
	if err != nil {
		if ctx.Err() != nil {
			killQuietly(h)
			return m.fail(rec, fmt.Errorf("up %s interrupted: %w", rec.Name, ctx.Err()))
		}
		return m.fail(rec, err)
	}
	m.Log.Debug("post-restore", "vm", rec.Name, "clock_step_ms", res.ClockStepMS, "reseeded", res.Reseeded)
	if tap != "" {
		if err := network.SetLinkUp(tap, true); err != nil {
			return m.fail(rec, fmt.Errorf("network: %w", err))
		}
	}
	if len(o.Secrets) > 0 {
		if err := m.deliverSecrets(ctx, m.agentClient(h, rec.Name), rec.Name, o.Secrets, p); err != nil {
			return m.fail(rec, err)
		}
	}
	rec.State, rec.Reason = string(backend.StateRunning), ""
	if err := m.Store.Put(rec); err != nil {
		return nil, err
	}
	p.emit("ready", fmt.Sprintf("%s is running (restored in %.2fs)", rec.Name, time.Since(start).Seconds()))
	return rec, nil
}

// postRestore sends the clone its clock, entropy and name, retrying while
// the agent link re-synchronises after the restore.
func (m *Manager) postRestore(ctx context.Context, h backend.Handle, req proto.PostRestoreRequest, timeout time.Duration) (*proto.PostRestoreResult, error) {
	name := req.Hostname
	req.Entropy = make([]byte, 64)
	if _, err := rand.Read(req.Entropy); err != nil {
		return nil, fmt.Errorf("entropy for the guest: %w", err)
	}
	// The clone gets keys of its own: it stops sharing its parent's guest
	// key, and one restored from a template stops trusting the template's
	// bootstrap host key.
	dir := m.Store.Dir(name)
	pin, err := m.rekeyRequest(&req)
	if err != nil {
		return nil, fmt.Errorf("new agent keys for %s: %w", name, err)
	}
	newClient, err := m.clientWithPin(h, pin)
	if err != nil {
		return nil, err
	}
	ac := m.agentClient(h, name)
	deadline := time.Now().Add(timeout)
	for attempt := 0; ; attempt++ {
		// A lost answer may hide keys already taken: after the first try,
		// alternate between the old keys and the new.
		c := ac
		if attempt%2 == 1 && req.HostPublicKey != "" {
			c = newClient
		}
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		req.UnixNano = time.Now().UnixNano()
		res, err := c.PostRestore(actx, req)
		cancel()
		if err == nil {
			if res.Hostname != name {
				return nil, fmt.Errorf("restored VM %s reports hostname %q after post-restore", name, res.Hostname)
			}
			if res.Rekeyed {
				if err := store.WriteFileAtomic(filepath.Join(dir, guestPinFile), []byte(pin+"\n"), 0o600); err != nil {
					return nil, fmt.Errorf("pin the new guest key of %s: %w", name, err)
				}
				if err := os.Remove(filepath.Join(dir, bootstrapKeyFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return nil, err
				}
			}
			return res, nil
		}
		if e, ok := proto.AsError(err); ok && e.Code == proto.CodeBadRequest && req.HostPublicKey != "" && strings.Contains(e.Message, "host_public_key") {
			// An agent saved before keys could change: it keeps its own.
			m.Log.Warn("the restored agent cannot change its keys; the clone shares its snapshot's guest key", "vm", name)
			req.HostPublicKey, req.GuestPrivateKey = "", ""
			continue
		}
		if e, ok := proto.AsError(err); ok {
			// The agent answered and refused: retrying will not help.
			return nil, fmt.Errorf("post-restore of %s: %w", name, e)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, serr := h.State(sctx)
		cancel()
		if serr == nil && (st == backend.StateStopped || st == backend.StateFailed) {
			return nil, fmt.Errorf("restored VM %s exited before its agent answered: %v; serial log: %s", name, err, m.SerialLog(name))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("restored VM %s: agent did not answer within %s: %w", name, timeout, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
