package vm

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/store"
)

// StartOptions are the inputs of Start and Restart.
type StartOptions struct {
	BootTimeout time.Duration
	StopTimeout time.Duration // Restart only
	Force       bool          // Restart only: kill instead of a graceful stop
	Progress    Progress
	// Secrets replace the VM's secrets (secrets.go); every name the record
	// lists must be given again. Start zeroes the values when it returns.
	Secrets []proto.Secret
}

// disker is implemented by handles that can report the drives they used,
// so a cold boot reuses the VM's own disk rather than making a fresh one.
type disker interface {
	Disks() []backend.Disk
}

// Start boots a stopped (or failed) VM again from its record: same name,
// directory and writable disk, a fresh config drive and a fresh VMM.
func (m *Manager) Start(ctx context.Context, name string, o StartOptions) (*store.Record, error) {
	return m.start(ctx, name, o, "start")
}

func (m *Manager) start(ctx context.Context, name string, o StartOptions, verb string) (*store.Record, error) {
	start := time.Now()
	defer wipeSecrets(o.Secrets)
	// Get reconciles first, so a crashed VM reads as stopped or failed.
	if _, err := m.Get(ctx, name); err != nil {
		return nil, err
	}
	unlock, err := m.Store.Lock(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Re-read under the lock: another start may have won the race.
	rec, err := m.Store.Get(name)
	if err != nil {
		return nil, err
	}
	if rec.State == string(backend.StateRunning) || rec.State == string(backend.StatePaused) {
		return rec, fmt.Errorf("VM %q is already %s", name, rec.State)
	}
	if active(rec.State) {
		return nil, fmt.Errorf("VM %q is %s; wait for it or stop it with 'mvmctl down %s'", name, rec.State, name)
	}
	if err := checkSecretsGiven(rec, o.Secrets, verb); err != nil {
		return nil, err
	}
	if rec.Boot == nil || rec.Backend == "" {
		return nil, fmt.Errorf("VM %q has no boot record (created by an older mvmctl or interrupted early); recreate it with 'mvmctl rm %s && mvmctl up --name %s'", name, name, name)
	}
	for _, f := range []string{rec.Boot.Kernel, rec.Boot.Initrd} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("VM %q boots from %s, which is gone (image cache pruned?); recreate the VM: %w", name, f, err)
		}
	}
	be, err := backend.Get(rec.Backend)
	if err != nil {
		return nil, err
	}
	if err := be.Available(ctx); err != nil {
		return nil, fmt.Errorf("backend %s is not usable: %w (run 'mvmctl doctor')", rec.Backend, err)
	}
	spec := backend.Spec{ImageDigest: rec.ImageDigest}
	if len(o.Secrets) > 0 {
		spec.Cmdline = secretsKernelArgs
	}
	if h, err := be.Open(rec.Dir); err == nil {
		// Leftover processes of the old run would hold the disk.
		killQuietly(h)
		if d, ok := h.(disker); ok {
			for _, disk := range d.Disks() {
				if disk.ID == "config" || disk.ReadOnly {
					continue
				}
				if _, err := os.Stat(disk.Path); err == nil {
					spec.Disks = append(spec.Disks, disk)
				}
			}
		}
	}
	if len(spec.Disks) == 0 {
		if rec.Boot.Rootfs == "" {
			return nil, fmt.Errorf("VM %q: its disk is gone and it has no image to make a new one from; recreate it", name)
		}
		m.Log.Warn("VM disk not found; booting from a fresh copy of the image", "vm", name)
		spec.RootImage = rec.Boot.Rootfs
	}
	p := &progress{fn: o.Progress, vm: name, start: start}
	defer m.deliverOnContact(rec, o.Secrets, p)()
	if err := m.boot(ctx, rec, be, spec, o.BootTimeout, p); err != nil {
		return rec, err
	}
	p.emit("ready", fmt.Sprintf("%s is running (%.1fs)", name, time.Since(start).Seconds()))
	return rec, nil
}

// Restart stops a VM (if it runs) and boots it again from the same record.
func (m *Manager) Restart(ctx context.Context, name string, o StartOptions) (*store.Record, error) {
	// Before stopping it: a VM that cannot get its secrets back stays up.
	rec, err := m.Get(ctx, name)
	if err != nil {
		wipeSecrets(o.Secrets)
		return nil, err
	}
	if err := checkSecretsGiven(rec, o.Secrets, "restart"); err != nil {
		wipeSecrets(o.Secrets)
		return nil, err
	}
	if _, err := m.Down(ctx, name, o.StopTimeout, o.Force); err != nil {
		wipeSecrets(o.Secrets)
		return nil, fmt.Errorf("restart %s: %w", name, err)
	}
	return m.start(ctx, name, o, "restart")
}
