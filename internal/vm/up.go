package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/config"
	"github.com/mvm-dev/mvm/internal/image"
	"github.com/mvm-dev/mvm/internal/store"
)

// UpOptions are the inputs of Up. Zero values mean "not given".
type UpOptions struct {
	Name    string
	Image   string
	Backend string
	// Arch is the guest's GOARCH ("" = the host's); another one is
	// emulated (backend.Capabilities.ForeignArch).
	Arch        string
	CPUs        int
	MemoryMiB   int
	BootTimeout time.Duration
	// ConfigFile is a per-VM TOML file (see VMConfig).
	ConfigFile string
	// FromSnapshot restores a new VM from this snapshot instead of booting.
	FromSnapshot string
	// Network is the network to join ("none": no NIC, "user": user-mode
	// networking); Publish are -p specs.
	Network string
	Publish []string
	// Disks are attached after the root disk, as they are: the caller owns
	// the files (a container's rootfs, say) and removes them after the VM.
	Disks    []backend.Disk
	Progress Progress
	// Secrets (ParseSecretFlags) go to the guest's /run/secrets once its
	// agent answers; the record keeps their names only. Up zeroes the
	// values when it returns.
	Secrets []proto.Secret
	// Template supplies defaults and what boots (templateUp); flags win.
	// A warm pool of it hands out a member instead when flags allow.
	Template string
	// Pool hands out a member of this warm pool (pool_handout.go).
	Pool string

	// Set from a template: restore from this snapshot directory, or boot
	// these image files (imageRef is what the record says it booted).
	snapshotDir string
	artifacts   *image.Artifacts
	imageRef    string
	tplSet      []string // Sources keys the template supplied
	// bootstrapKey gives the VM a host key of its own (bootstrapKeyFile):
	// a template's build VM, whose snapshot may restore on other hosts.
	bootstrapKey bool
	// memberOf makes the VM a member of this pool (its refiller's up).
	memberOf string
}

// Up builds (or reuses) the image, boots a VM and waits until its agent is
// ready. On error after the VM was created, the VM is left for inspection
// unless ctx was cancelled (Ctrl-C), in which case its VMM is killed so no
// process outlives a failed `up` unseen.
func (m *Manager) Up(ctx context.Context, o UpOptions) (*store.Record, error) {
	start := time.Now()
	defer wipeSecrets(o.Secrets)
	var vc *VMConfig
	if o.ConfigFile != "" {
		var err error
		if vc, err = LoadVMConfig(o.ConfigFile); err != nil {
			return nil, err
		}
		if o.Name == "" {
			o.Name = vc.Name
		}
	}
	if err := checkExtraDisks(o); err != nil {
		return nil, err
	}
	if (o.Pool != "" || o.Template != "") && o.memberOf == "" {
		if rec, handled, err := m.upPooled(ctx, &o, start); handled {
			return rec, err
		}
	}
	if o.Template != "" {
		if _, err := m.templateUp(ctx, &o); err != nil {
			return nil, err
		}
	}
	if o.FromSnapshot != "" || o.snapshotDir != "" {
		return m.upFromSnapshot(ctx, o, start)
	}
	if o.Name == "" {
		o.Name = store.RandomName(m.Store.Exists)
	}
	if err := store.ValidateName(o.Name); err != nil {
		return nil, err
	}
	p := &progress{fn: o.Progress, vm: o.Name, start: start}

	img := resolveImage(o, vc, m.Config)
	if o.imageRef != "" {
		img = strChoice{o.imageRef, SourceTemplate}
	}
	var recipe *image.Recipe
	var err error
	if a := o.artifacts; a != nil {
		// A template's own image: its recipe may live on another host.
		recipe = &image.Recipe{Name: a.Name, Resources: image.ResourceSpec{CPUs: a.DefaultCPUs, MemoryMiB: a.DefaultMemMiB}}
	} else if recipe, err = image.Resolve(img.value); err != nil {
		return nil, fmt.Errorf("%w; see 'mvmctl image list'", err)
	}
	arch, err := image.GuestArch(o.Arch)
	if err != nil {
		return nil, err
	}
	beChoice := resolveBackendName(o, vc, m.Config)
	p.emit("backend", "choosing backend")
	be, err := m.chooseBackend(ctx, beChoice.value, arch)
	if err != nil {
		return nil, err
	}
	agentPath, err := FindAgentFor(arch)
	if err != nil {
		return nil, err
	}
	cpus, mem := resolveShape(o, vc, recipe.Resources.CPUs, recipe.Resources.MemoryMiB, m.Config)

	rec := &store.Record{
		Name: o.Name, State: string(backend.StateCreating), Backend: be.Name(),
		Image: recipe.Name, ImageRef: img.value, Created: time.Now().UTC(), Arch: arch,
		CPUs: cpus.value, MemoryMiB: mem.value,
		Sources: map[string]string{"image": img.source, "backend": beChoice.source, "cpus": cpus.source, "memory_mib": mem.source},
	}
	if vc != nil {
		rec.VMConfig = vc.Path
	}
	rec.Template, rec.Pool = o.Template, o.memberOf
	for _, k := range o.tplSet {
		rec.Sources[k] = SourceTemplate
	}
	if err := planNet(rec, resolveNetwork(o, vc, m), o.Publish, be); err != nil {
		return nil, err
	}
	defer m.deliverOnContact(rec, o.Secrets, p)()
	unlock, err := m.create(rec)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if o.bootstrapKey {
		if err := writeBootstrapKey(rec.Dir); err != nil {
			return m.fail(rec, err)
		}
	}

	p.emit("image", "preparing image "+recipe.Name)
	art := o.artifacts
	if art == nil {
		art, err = image.EnsureRecipe(ctx, recipe, image.BuildOptions{
			CacheDir:  m.Dirs.ImagesDir(),
			AgentPath: agentPath,
			Arch:      arch,
			Progress:  func(s string) { p.emit("image", "image "+recipe.Name+": "+image.StageLabel(s)) },
		})
		if err != nil {
			return m.fail(rec, fmt.Errorf("build image %s: %w", recipe.Name, err))
		}
	}
	rec.ImageDigest = art.Digest
	rec.Boot = &store.Boot{Kernel: art.Kernel, Initrd: art.Initrd, Rootfs: art.Rootfs, Console: art.Console, ConfigDrive: art.ConfigDrive}
	spec := backend.Spec{RootImage: art.Rootfs, ImageDigest: art.Digest, Disks: o.Disks}
	if len(o.Secrets) > 0 {
		spec.Cmdline = secretsKernelArgs
	}
	if err := m.boot(ctx, rec, be, spec, o.BootTimeout, p); err != nil {
		return rec, err
	}
	p.emit("ready", fmt.Sprintf("%s is running (%.1fs)", o.Name, time.Since(start).Seconds()))
	return rec, nil
}

// chooseBackend maps a backend name ("" = automatic) to a usable backend.
// Automatic selection probes the host in the documented order (usable KVM,
// Apple Virtualization, Docker, then QEMU with TCG); the decision with the
// reason for every candidate is logged at debug level (`up -v`). A goarch
// guest ("" = the host's) of another arch narrows it to emulating backends.
func (m *Manager) chooseBackend(ctx context.Context, name, goarch string) (backend.Backend, error) {
	be, d, err := backend.SelectArch(ctx, name, goarch)
	for _, line := range strings.Split(strings.TrimRight(d.String(), "\n"), "\n") {
		if line != "" {
			m.Log.Debug("backend selection: " + line)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w (run 'mvmctl doctor')", err)
	}
	return be, nil
}

// create takes the name's lock and claims it with rec. A taken name gets a
// hint that depends on what the existing VM is doing.
func (m *Manager) create(rec *store.Record) (func(), error) {
	unlock, err := m.Store.Lock(rec.Name)
	if err != nil {
		return nil, err
	}
	if err := m.Store.Create(rec); err != nil {
		unlock()
		if errors.Is(err, store.ErrExists) {
			if old, gerr := m.Store.Get(rec.Name); gerr == nil && !active(old.State) {
				return nil, fmt.Errorf("%w: %q is %s (boot it again with 'mvmctl start %s' or 'mvmctl restart %s', or remove it with 'mvmctl rm %s')",
					store.ErrExists, rec.Name, old.State, rec.Name, rec.Name, rec.Name)
			}
		}
		return nil, err
	}
	return unlock, nil
}

// fail records err on rec and returns it.
func (m *Manager) fail(rec *store.Record, err error) (*store.Record, error) {
	rec.State, rec.Reason = string(backend.StateFailed), err.Error()
	_ = m.Store.Put(rec)
	return rec, err
}

func (m *Manager) bootTimeout(t time.Duration) time.Duration {
	if t == 0 {
		t = time.Duration(m.Config.BootTimeout)
	}
	if t == 0 {
		t = config.BuiltinBootTimeout
	}
	return t
}

// waitReady polls the agent's health until every stage is done, the VMM
// exits, or timeout passes. Errors name the pending stage and the serial log.
func (m *Manager) waitReady(ctx context.Context, h backend.Handle, rec *store.Record, timeout time.Duration, p *progress) error {
	ac := m.agentClient(h, rec.Name)
	lastStage := ""
	w := readyWait{
		health:  ac.Health,
		contact: func(ctx context.Context) error { return firstContact(ctx, rec, ac) },
		state:   h.State,
		pending: func(stage string) {
			if stage != lastStage {
				p.emit("agent", "guest stage pending: "+stage)
				lastStage = stage
			}
		},
		log: func(err error) { m.Log.Debug("agent not ready", "vm", rec.Name, "err", err) },
	}
	pending, err := w.run(ctx, timeout)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errVMExited):
		return fmt.Errorf("VM %s exited during boot while waiting for %s; last console lines:\n%s\nfull serial log: %s",
			rec.Name, pending, tail(m.SerialLog(rec.Name), 15), m.SerialLog(rec.Name))
	case errors.Is(err, errNotReady):
		return fmt.Errorf("VM %s not ready after %s: pending stage %q; serial log: %s (last lines below). The VM is left running for inspection: 'mvmctl logs %s', remove it with 'mvmctl rm -f %s'\n%s",
			rec.Name, timeout, pending, m.SerialLog(rec.Name), rec.Name, rec.Name, tail(m.SerialLog(rec.Name), 10))
	}
	return err
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

// checkExtraDisks refuses extra disks where they would be dropped (a
// restore or a pooled clone keeps its snapshot's drives) or collide with
// the backend's own.
func checkExtraDisks(o UpOptions) error {
	if len(o.Disks) == 0 {
		return nil
	}
	if o.FromSnapshot != "" || o.Pool != "" || o.Template != "" {
		return errors.New("extra disks need a fresh boot, not a snapshot, template or pool")
	}
	seen := map[string]bool{}
	for _, d := range o.Disks {
		switch {
		case !filepath.IsAbs(d.Path):
			return fmt.Errorf("disk %q: path must be absolute", d.Path)
		case !diskID(d.ID) || d.ID == "root" || d.ID == "config" || seen[d.ID]:
			return fmt.Errorf("disk %q: id %q must be 1-32 of [a-z0-9-], unique, and not root or config", d.Path, d.ID)
		}
		seen[d.ID] = true
	}
	return nil
}

// diskID: QEMU takes it as a drive id, so no commas, quotes or spaces.
func diskID(id string) bool {
	if id == "" || len(id) > 32 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
