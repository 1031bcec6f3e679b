package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/config"
	"github.com/mvm-dev/mvm/internal/guestcfg"
	"github.com/mvm-dev/mvm/internal/image"
	"github.com/mvm-dev/mvm/internal/store"
)

// UpOptions are the inputs of Up. Zero values mean "not given".
type UpOptions struct {
	Name        string
	Image       string
	Backend     string
	CPUs        int
	MemoryMiB   int
	BootTimeout time.Duration
	Progress    Progress
}

// Up builds (or reuses) the image, boots a VM and waits until its agent is
// ready. On error after the VM was created, the VM is left for inspection
// unless ctx was cancelled (Ctrl-C), in which case its VMM is killed so no
// process outlives a failed `up` unseen.
func (m *Manager) Up(ctx context.Context, o UpOptions) (*store.Record, error) {
	start := time.Now()
	if o.Name == "" {
		o.Name = store.RandomName(m.Store.Exists)
	}
	if err := store.ValidateName(o.Name); err != nil {
		return nil, err
	}
	p := &progress{fn: o.Progress, vm: o.Name, start: start}

	imgRef := firstString(o.Image, m.Config.DefaultImage, config.BuiltinImage)
	recipe, err := image.Resolve(imgRef)
	if err != nil {
		return nil, fmt.Errorf("%w; see 'mvmctl image list'", err)
	}
	imgName := recipe.Name
	beName := firstString(o.Backend, m.Config.DefaultBackend, "qemu")
	be, err := backend.Get(beName)
	if err != nil {
		return nil, err
	}
	p.emit("backend", "checking backend "+beName)
	if err := be.Available(ctx); err != nil {
		return nil, fmt.Errorf("backend %s is not usable: %w (run 'mvmctl doctor')", beName, err)
	}
	agentPath, err := FindAgent()
	if err != nil {
		return nil, err
	}

	rec := &store.Record{Name: o.Name, State: string(backend.StateCreating), Backend: beName, Image: imgName, Created: time.Now().UTC()}
	unlock, err := m.Store.Lock(o.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := m.Store.Create(rec); err != nil {
		return nil, err
	}
	fail := func(err error) (*store.Record, error) {
		rec.State, rec.Reason = string(backend.StateFailed), err.Error()
		_ = m.Store.Put(rec)
		return rec, err
	}

	p.emit("image", "preparing image "+imgName)
	art, err := image.EnsureRecipe(ctx, recipe, image.BuildOptions{
		CacheDir:  m.Dirs.ImagesDir(),
		AgentPath: agentPath,
		Arch:      runtime.GOARCH,
		Progress:  func(s string) { p.emit("image", s) },
	})
	if err != nil {
		return fail(fmt.Errorf("build image %s: %w", imgName, err))
	}
	rec.ImageDigest = art.Digest

	cpus := firstSet(choice{o.CPUs, SourceFlag}, choice{art.DefaultCPUs, SourceImage}, choice{m.Config.DefaultCPUs, SourceUserConfig}, choice{config.BuiltinCPUs, SourceDefault})
	mem := firstSet(choice{o.MemoryMiB, SourceFlag}, choice{art.DefaultMemMiB, SourceImage}, choice{m.Config.DefaultMemoryMiB, SourceUserConfig}, choice{config.BuiltinMemoryMiB, SourceDefault})
	rec.CPUs, rec.MemoryMiB = cpus.value, mem.value
	rec.Sources = map[string]string{"cpus": cpus.source, "memory_mib": mem.source}

	cfgPath := filepath.Join(rec.Dir, configDriveFile)
	gc := &guestcfg.Config{
		Version: 1, Name: o.Name, Hostname: o.Name,
		Transport:        guestcfg.Transport{Kind: guestcfg.TransportSerial, SerialName: guestcfg.SerialPortName, VsockPort: guestcfg.DefaultVsockPort},
		Policy:           guestcfg.Policy{Console: art.Console},
		HostTimeUnixNano: time.Now().UnixNano(),
	}
	if be.Capabilities().Vsock {
		gc.Transport.Kind = guestcfg.TransportVsock
	}
	if err := image.WriteConfigDrive(ctx, cfgPath, gc); err != nil {
		return fail(fmt.Errorf("write config drive: %w", err))
	}

	rec.State = string(backend.StateStarting)
	if err := m.Store.Put(rec); err != nil {
		return nil, err
	}
	p.emit("boot", fmt.Sprintf("starting %s VM (%d vCPU, %d MiB)", beName, rec.CPUs, rec.MemoryMiB))
	spec := backend.Spec{
		Name: o.Name, Dir: rec.Dir,
		Kernel: art.Kernel, Initrd: art.Initrd, RootImage: art.Rootfs,
		CPUs: rec.CPUs, MemoryMiB: rec.MemoryMiB,
		ConfigISO: cfgPath, SerialLog: m.SerialLog(o.Name),
	}
	h, err := be.Start(ctx, spec)
	if err != nil {
		return fail(fmt.Errorf("start VM %s: %w (serial log: %s)", o.Name, err, spec.SerialLog))
	}
	if pr, ok := h.(interface{ PID() int }); ok {
		rec.PID = pr.PID()
	}
	rec.Started = time.Now().UTC()
	_ = m.Store.Put(rec)

	timeout := o.BootTimeout
	if timeout == 0 {
		timeout = time.Duration(m.Config.BootTimeout)
	}
	if timeout == 0 {
		timeout = config.BuiltinBootTimeout
	}
	p.emit("agent", "waiting for the guest agent")
	if err := m.waitReady(ctx, h, rec, timeout, p); err != nil {
		if ctx.Err() != nil {
			// Interrupted: kill the VMM so nothing runs unseen; the record
			// stays (failed) so `ls` shows what happened and `rm` cleans up.
			kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = h.Kill(kctx)
			cancel()
			return fail(fmt.Errorf("up %s interrupted: %w", o.Name, ctx.Err()))
		}
		return fail(err)
	}
	rec.State, rec.Reason = string(backend.StateRunning), ""
	if err := m.Store.Put(rec); err != nil {
		return nil, err
	}
	p.emit("ready", fmt.Sprintf("%s is running (%.1fs)", o.Name, time.Since(start).Seconds()))
	return rec, nil
}

// waitReady polls the agent's health until every stage is done, the VMM
// exits, or timeout passes. Errors name the pending stage and the serial log.
func (m *Manager) waitReady(ctx context.Context, h backend.Handle, rec *store.Record, timeout time.Duration, p *progress) error {
	deadline := time.Now().Add(timeout)
	ac := agentClient(h)
	pending := "agent connection"
	lastStage := ""
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		hr, err := ac.Health(actx)
		cancel()
		if err == nil {
			if hr.Ready {
				return nil
			}
			for _, s := range hr.Stages {
				if !s.Done {
					pending = s.Name
					break
				}
			}
			if pending != lastStage {
				p.emit("agent", "guest stage pending: "+pending)
				lastStage = pending
			}
		} else {
			m.Log.Debug("agent not ready", "vm", rec.Name, "err", err)
		}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, serr := h.State(sctx)
		cancel()
		if serr == nil && (st == backend.StateStopped || st == backend.StateFailed) {
			return fmt.Errorf("VM %s exited during boot while waiting for %s; last console lines:\n%s\nfull serial log: %s",
				rec.Name, pending, tail(m.SerialLog(rec.Name), 15), m.SerialLog(rec.Name))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("VM %s not ready after %s: pending stage %q; serial log: %s (last lines below). The VM is left running for inspection: 'mvmctl logs %s', remove it with 'mvmctl rm -f %s'\n%s",
				rec.Name, timeout, pending, m.SerialLog(rec.Name), rec.Name, rec.Name, tail(m.SerialLog(rec.Name), 10))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of a file, or a note when it cannot be read.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "  (no console output yet)"
		}
		return "  (" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

func firstString(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}
