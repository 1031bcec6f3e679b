package vm

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/guestcfg"
	"github.com/mvm-dev/mvm/internal/image"
	"github.com/mvm-dev/mvm/internal/store"
)

// guestConfig is the config drive content for rec on be.
func guestConfig(rec *store.Record, be backend.Backend) *guestcfg.Config {
	gc := &guestcfg.Config{
		Version: 1, Name: rec.Name, Hostname: rec.Name,
		Transport:        guestcfg.Transport{Kind: guestcfg.TransportSerial, SerialName: guestcfg.SerialPortName, VsockPort: guestcfg.DefaultVsockPort},
		HostTimeUnixNano: time.Now().UnixNano(),
	}
	if rec.Boot != nil {
		gc.Policy.Console = rec.Boot.Console
	}
	// vhost-vsock needs KVM, which a foreign-arch guest never gets.
	if be.Capabilities().Vsock && !image.Foreign(rec.Arch) {
		gc.Transport.Kind = guestcfg.TransportVsock
	}
	return gc
}

// boot writes rec's config drive, starts it on be with the disks in spec
// (RootImage for a fresh overlay, or Disks to reuse existing ones) and waits
// for the agent. The caller holds rec's lock. On failure rec is marked
// failed; a cancelled ctx (Ctrl-C) also kills the VMM, so nothing runs
// unseen.
func (m *Manager) boot(ctx context.Context, rec *store.Record, be backend.Backend, spec backend.Spec, timeout time.Duration, p *progress) error {
	cfgPath := filepath.Join(rec.Dir, configDriveFile)
	gc := guestConfig(rec, be)
	lease, err := m.attachNet(ctx, rec, &spec)
	if err != nil {
		_, err = m.fail(rec, fmt.Errorf("network: %w", err))
		return err
	}
	if lease != nil {
		gc.Network = lease.Guest()
	}
	// Agent authentication: a fresh guest key per boot (keys.go).
	if err := m.provisionAgentKeys(rec.Dir, gc); err != nil {
		_, err = m.fail(rec, fmt.Errorf("agent keys: %w", err))
		return err
	}
	t := time.Now()
	format := ""
	if rec.Boot != nil {
		format = rec.Boot.ConfigDrive
	}
	if err := image.WriteConfigDrive(ctx, cfgPath, gc, format); err != nil {
		_, err = m.fail(rec, fmt.Errorf("write config drive: %w", err))
		return err
	}
	if err := sealConfigDrive(cfgPath); err != nil {
		_, err = m.fail(rec, err)
		return err
	}
	m.Log.Debug("boot step", "step", "config drive", "took", time.Since(t))
	rec.State, rec.Reason, rec.PID = string(backend.StateStarting), "", 0
	if err := m.Store.Put(rec); err != nil {
		return err
	}
	p.emit("boot", fmt.Sprintf("starting %s VM (%d vCPU, %d MiB)", be.Name(), rec.CPUs, rec.MemoryMiB))
	spec.Name, spec.Dir, spec.Arch = rec.Name, rec.Dir, rec.Arch
	spec.Kernel, spec.Initrd = rec.Boot.Kernel, rec.Boot.Initrd
	spec.CPUs, spec.MemoryMiB = rec.CPUs, rec.MemoryMiB
	spec.ConfigISO, spec.SerialLog = cfgPath, m.SerialLog(rec.Name)
	spec.Guest = gc // backends without a config drive (docker) deliver it themselves
	t = time.Now()
	h, err := be.Start(ctx, spec)
	m.Log.Debug("boot step", "step", "backend start", "took", time.Since(t))
	if err != nil {
		_, err = m.fail(rec, fmt.Errorf("start VM %s: %w (serial log: %s)", rec.Name, err, spec.SerialLog))
		return err
	}
	m.recordAddress(ctx, rec, h) // backends that address the guest themselves (docker)
	return m.awaitAgent(ctx, rec, h, timeout, p)
}

// awaitAgent records the started VMM and waits until the guest is ready.
func (m *Manager) awaitAgent(ctx context.Context, rec *store.Record, h backend.Handle, timeout time.Duration, p *progress) error {
	if pr, ok := h.(interface{ PID() int }); ok {
		rec.PID = pr.PID()
	}
	rec.Started = time.Now().UTC()
	_ = m.Store.Put(rec)
	p.emit("agent", "waiting for the guest agent")
	if err := m.waitReady(ctx, h, rec, m.bootTimeout(timeout), p); err != nil {
		if ctx.Err() != nil {
			killQuietly(h)
			_, err = m.fail(rec, fmt.Errorf("up %s interrupted: %w", rec.Name, ctx.Err()))
			return err
		}
		_, err = m.fail(rec, err)
		return err
	}
	rec.State, rec.Reason = string(backend.StateRunning), ""
	return m.Store.Put(rec)
}

// killQuietly stops a VMM with a fresh deadline: the caller's ctx may be
// what ended.
func killQuietly(h backend.Handle) {
	kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_ = h.Kill(kctx)
	cancel()
}
