package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/backend/qemu"
	"github.com/mvm-dev/mvm/internal/image"
	"github.com/mvm-dev/mvm/internal/network"
	"github.com/mvm-dev/mvm/internal/store"
	"github.com/mvm-dev/mvm/internal/template"
)

// Templates is the template store, <share>/templates.
func (m *Manager) Templates() *template.Store {
	return template.NewStore(filepath.Join(m.Dirs.Share, "templates"))
}

// TemplateCreateOptions are the inputs of TemplateCreate.
type TemplateCreateOptions struct {
	Name        string
	Image       string // catalog name or recipe path
	Description string
	Defaults    template.Defaults
}

// TemplateCreate records a new template; nothing is built until
// TemplateBuild (or the first up --template, which boots the image).
func (m *Manager) TemplateCreate(ctx context.Context, o TemplateCreateOptions) (*template.Template, error) {
	if err := template.ValidateName(o.Name); err != nil {
		return nil, err
	}
	if o.Image == "" {
		o.Image = m.Config.DefaultImage
	}
	if o.Image == "" {
		o.Image = "minimal"
	}
	ref := o.Image
	if _, err := image.Resolve(ref); err != nil {
		return nil, fmt.Errorf("template %s: %w; see 'mvmctl image list'", o.Name, err)
	}
	// A recipe file is kept by absolute path: the template outlives the
	// directory it was created from.
	if strings.ContainsRune(ref, os.PathSeparator) || strings.HasSuffix(ref, ".toml") {
		if abs, err := filepath.Abs(ref); err == nil {
			ref = abs
		}
	}
	if err := m.checkDefaults(o.Defaults); err != nil {
		return nil, fmt.Errorf("template %s: %w", o.Name, err)
	}
	ts := m.Templates()
	unlock, err := ts.Lock(o.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if ts.Exists(o.Name) {
		return nil, fmt.Errorf("template %q already exists (see 'mvmctl template info %s', or remove it with 'mvmctl template delete %s')", o.Name, o.Name, o.Name)
	}
	t := &template.Template{Name: o.Name, Description: o.Description, Image: ref, Defaults: o.Defaults}
	if err := ts.Put(t); err != nil {
		return nil, err
	}
	return t, nil
}

// checkDefaults refuses defaults up would refuse later anyway.
func (m *Manager) checkDefaults(d template.Defaults) error {
	if d.Backend != "" {
		if _, err := backend.Get(d.Backend); err != nil {
			return err
		}
	}
	if d.Egress != "" {
		if _, err := (&network.Egress{Preset: d.Egress}).Compile(); err != nil {
			return err
		}
	}
	for _, p := range d.Publish {
		if _, err := network.ParsePort(p); err != nil {
			return err
		}
	}
	return nil
}

// TemplateEdit changes a template's description and defaults.
func (m *Manager) TemplateEdit(ctx context.Context, name string, edit func(*template.Template) error) (*template.Template, error) {
	ts := m.Templates()
	unlock, err := ts.Lock(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	t, err := ts.Get(name)
	if err != nil {
		return nil, err
	}
	snap := t.Snapshot
	if err := edit(t); err != nil {
		return nil, err
	}
	if err := m.checkDefaults(t.Defaults); err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	if t.Name != name {
		return nil, errors.New("a template's name cannot be edited")
	}
	t.Snapshot = snap
	if err := ts.Put(t); err != nil {
		return nil, err
	}
	return t, nil
}

// TemplateUsers lists the VMs made from a template; they boot from its
// image files and restore over its snapshot's disks.
func (m *Manager) TemplateUsers(name string) []string {
	recs, _ := m.Store.List()
	var out []string
	for _, r := range recs {
		if r.Template == name {
			out = append(out, r.Name)
		}
	}
	return out
}

// TemplateDelete removes a template, refused while VMs use it unless force.
func (m *Manager) TemplateDelete(ctx context.Context, name string, force bool) error {
	ts := m.Templates()
	unlock, err := ts.Lock(name)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := ts.Get(name); err != nil {
		return err
	}
	if users := append(m.TemplateUsers(name), m.poolUsers(name)...); len(users) > 0 && !force {
		return fmt.Errorf("template %q is used by VMs %s (they boot from its files): remove them first, or use -f (they will not start again)", name, strings.Join(users, ", "))
	}
	return ts.Remove(name)
}

// TemplateBuildOptions are the choices of TemplateBuild.
type TemplateBuildOptions struct {
	// Snapshot boots the image, waits until it is healthy, saves it as the
	// template's snapshot and removes the VM.
	Snapshot    bool
	BootTimeout time.Duration
	Progress    Progress
}

// TemplateBuild builds a template's image into its directory and, with
// Snapshot, saves a booted VM of it too.
func (m *Manager) TemplateBuild(ctx context.Context, name string, o TemplateBuildOptions) (*template.Template, error) {
	ts := m.Templates()
	unlock, err := ts.Lock(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	t, err := ts.Get(name)
	if err != nil {
		return nil, err
	}
	if users := append(m.TemplateUsers(name), m.poolUsers(name)...); len(users) > 0 {
		return nil, fmt.Errorf("template %q is used by VMs %s: remove them before rebuilding it", name, strings.Join(users, ", "))
	}
	p := &progress{fn: o.Progress, vm: name, start: time.Now()}
	recipe, err := image.Resolve(t.Image)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	agentPath, err := FindAgent()
	if err != nil {
		return nil, err
	}
	p.emit("image", "preparing image "+recipe.Name)
	art, err := image.EnsureRecipe(ctx, recipe, image.BuildOptions{
		CacheDir: m.Dirs.ImagesDir(), AgentPath: agentPath, Arch: runtime.GOARCH,
		Progress: func(s string) { p.emit("image", s) },
	})
	if err != nil {
		return nil, fmt.Errorf("build image %s: %w", recipe.Name, err)
	}
	// The template keeps its own copy (hard links where the filesystem
	// allows), so a cache prune never breaks it and a push sends exactly
	// what its snapshot was saved over.
	p.emit("image", "copying the image into the template")
	if err := replaceDir(t.ImagePath(), func(tmp string) error { return copyImage(ctx, art.Dir, tmp) }); err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	t.ImageDigest, t.Snapshot = art.Digest, nil
	_ = os.RemoveAll(t.SnapshotPath())
	if o.Snapshot {
		info, err := m.templateSnapshot(ctx, t, o, p)
		if err != nil {
			_ = ts.Put(t)
			return nil, err
		}
		t.Snapshot = info
	}
	t.Source, t.Digest, t.SignedBy = "", "", ""
	if err := ts.Put(t); err != nil {
		return nil, err
	}
	p.emit("ready", "template "+name+" built")
	return t, nil
}

// templateSnapshot boots a VM from the template's image files, waits until
// its health checks pass, saves it into the template and removes the VM.
func (m *Manager) templateSnapshot(ctx context.Context, t *template.Template, o TemplateBuildOptions, p *progress) (*template.SnapshotInfo, error) {
	art, err := image.LoadDir(t.ImagePath())
	if err != nil {
		return nil, err
	}
	vmName := buildVMName(t.Name, m.Store.Exists)
	d := t.Defaults
	be := d.Backend
	if be == "" {
		be = m.Config.DefaultBackend
	}
	if be == "" {
		// Docker keeps no memory image: a snapshot template needs a VMM.
		be = "qemu"
	}
	up := UpOptions{
		Name: vmName, Backend: be, CPUs: d.CPUs, MemoryMiB: d.MemoryMiB, Network: d.Network,
		BootTimeout: o.BootTimeout, Progress: o.Progress, artifacts: art, imageRef: t.Image,
		bootstrapKey: true,
	}
	if up.Network == "" {
		up.Network = "none"
	}
	p.emit("boot", "booting "+vmName+" to save it")
	rec, err := m.Up(ctx, up)
	defer func() {
		if rec != nil || m.Store.Exists(vmName) {
			if err := m.Remove(context.WithoutCancel(ctx), vmName, true); err != nil {
				m.Log.Warn("could not remove the template's build VM", "vm", vmName, "err", err)
			}
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("template %s: boot: %w", t.Name, err)
	}
	if err := m.waitHealthy(ctx, vmName, m.bootTimeout(o.BootTimeout)); err != nil {
		return nil, fmt.Errorf("template %s: %w", t.Name, err)
	}
	p.emit("snapshot", "saving "+vmName)
	err = replaceDir(t.SnapshotPath(), func(tmp string) error {
		if err := os.Remove(tmp); err != nil {
			return err
		}
		_, err := m.snapshotTo(ctx, vmName, tmp, t.Name, SnapshotOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", t.Name, err)
	}
	info := &template.SnapshotInfo{Backend: rec.Backend, CPUs: rec.CPUs, MemoryMiB: rec.MemoryMiB, Created: time.Now().UTC()}
	if rec.Net != nil {
		info.Network = rec.Net.Network
	}
	return info, nil
}

// waitHealthy runs the VM's health checks until every one passes.
func (m *Manager) waitHealthy(ctx context.Context, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		res, err := m.Health(ctx, name, true)
		if err == nil {
			failing := ""
			for _, c := range res.Checks {
				if !c.OK {
					failing = c.Name + ": " + c.Detail
					break
				}
			}
			if res.Ready && failing == "" {
				return nil
			}
			last = failing
			if last == "" {
				last = "agent not ready"
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("VM %s did not become healthy within %s (last: %s; see 'mvmctl logs %s')", name, timeout, last, name)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// buildVMName picks a free name for a template's build VM.
func buildVMName(tpl string, taken func(string) bool) string {
	base := "tpl-" + tpl
	if len(base) > 56 {
		base = strings.TrimRight(base[:56], "-")
	}
	for i := 0; ; i++ {
		n := base
		if i > 0 {
			n = fmt.Sprintf("%s-%d", base, i)
		}
		if !taken(n) {
			return n
		}
	}
}

// replaceDir fills a fresh sibling of dir with fill and swaps it in, so a
// failure leaves the old contents (or none) and never a half-written dir.
func replaceDir(dir string, fill func(tmp string) error) error {
	tmp := filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".new")
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	if err := fill(tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	old := filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".old")
	_ = os.RemoveAll(old)
	if err := os.Rename(dir, old); err != nil && !errors.Is(err, os.ErrNotExist) {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	return os.RemoveAll(old)
}

// copyImage links or copies an image's files from src into dst.
func copyImage(ctx context.Context, src, dst string) error {
	for _, f := range image.EntryFiles() {
		s, d := filepath.Join(src, f), filepath.Join(dst, f)
		if err := os.Link(s, d); err == nil {
			continue
		}
		if err := sparseCopy(ctx, s, d); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o444); err != nil {
			return err
		}
	}
	return nil
}

// sparseCopy copies a file keeping its holes (rootfs images are mostly
// holes) and sharing blocks where the filesystem can.
func sparseCopy(ctx context.Context, src, dst string) error {
	out, err := exec.CommandContext(ctx, "cp", "--reflink=auto", "--sparse=always", "--no-preserve=all", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("copy %s: %w: %s", src, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// templateUp fills o from its template: defaults where flags are unset, and
// the template's snapshot or image files as what boots.
func (m *Manager) templateUp(ctx context.Context, o *UpOptions) (*template.Template, error) {
	t, err := m.Templates().Get(o.Template)
	if err != nil {
		return nil, err
	}
	if o.FromSnapshot != "" {
		return nil, errors.New("--template and --from-snapshot cannot be combined: a template brings its own snapshot")
	}
	d := t.Defaults
	if o.Image != "" && o.Image != t.Image {
		return nil, fmt.Errorf("--image %s conflicts with template %s, which boots %s", o.Image, t.Name, t.Image)
	}
	if o.Backend == "" && d.Backend != "" {
		o.Backend = d.Backend
		o.tplSet = append(o.tplSet, "backend")
	}
	if o.CPUs == 0 && d.CPUs != 0 {
		o.CPUs = d.CPUs
		o.tplSet = append(o.tplSet, "cpus")
	}
	if o.MemoryMiB == 0 && d.MemoryMiB != 0 {
		o.MemoryMiB = d.MemoryMiB
		o.tplSet = append(o.tplSet, "memory_mib")
	}
	if o.Network == "" {
		o.Network = d.Network
	}
	if len(o.Publish) == 0 {
		o.Publish = d.Publish
	}
	var missing []string
	for _, s := range d.Secrets {
		if !slices.ContainsFunc(o.Secrets, func(x proto.Secret) bool { return x.Name == s }) {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 && o.memberOf == "" { // a member gets them at hand-out
		return nil, fmt.Errorf("template %s expects secrets %s: give each with --secret NAME=@FILE or --secret NAME=env:VAR", t.Name, strings.Join(missing, ", "))
	}
	if d.Egress != "" && o.Network != "" && o.Network != "none" && o.Network != "user" {
		if err := m.ensureTemplateNetwork(ctx, o.Network, d.Egress); err != nil {
			return nil, fmt.Errorf("template %s: %w", t.Name, err)
		}
	}
	o.imageRef = t.Image
	if t.Snapshot != nil && (o.Backend == "" || o.Backend == t.Snapshot.Backend) {
		o.snapshotDir = t.SnapshotPath()
		if o.Network == "" {
			o.Network = t.Snapshot.Network
		}
		return t, nil
	}
	if t.HasImage() {
		art, err := image.LoadDir(t.ImagePath())
		if err != nil {
			return nil, fmt.Errorf("template %s: %w (rebuild it with 'mvmctl template build %s')", t.Name, err, t.Name)
		}
		o.artifacts = art
		return t, nil
	}
	o.Image = t.Image
	return t, nil
}

// ensureTemplateNetwork creates the template's network with its egress
// policy when it does not exist yet; an existing one keeps its own policy.
func (m *Manager) ensureTemplateNetwork(ctx context.Context, name, egress string) error {
	nm := m.Networks()
	if nm.Store.Exists(name) {
		return nil
	}
	_, err := nm.Create(ctx, network.CreateOptions{Name: name, Egress: &network.Egress{Preset: egress}})
	if err != nil && !errors.Is(err, network.ErrExists) {
		return err
	}
	return nil
}

// relocateTemplateSnapshot points a template snapshot's kernel, initrd and
// backing images at the template's own image directory (after a pull,
// where the pushing host's paths mean nothing).
func relocateTemplateSnapshot(ctx context.Context, t *template.Template) error {
	imgDir := t.ImagePath()
	remap := func(old string) (string, bool) {
		base := filepath.Base(old)
		if !slices.Contains(image.EntryFiles(), base) && base != "vmlinux" {
			return "", false
		}
		n := filepath.Join(imgDir, base)
		if _, err := os.Stat(n); err != nil {
			return "", false
		}
		return n, true
	}
	snap := t.SnapshotPath()
	if err := qemu.Relocate(ctx, snap, remap); err != nil {
		return err
	}
	// Our own record of the snapshot names the boot files too.
	metaPath := filepath.Join(snap, snapMetaFile)
	b, err := os.ReadFile(metaPath)
	if err != nil {
		return err
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s: %w", metaPath, err)
	}
	if s.Boot != nil {
		for _, p := range []*string{&s.Boot.Kernel, &s.Boot.Initrd, &s.Boot.Rootfs} {
			if n, ok := remap(*p); ok {
				*p = n
			}
		}
	}
	out, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return store.WriteFileAtomic(metaPath, append(out, '\n'), 0o600)
}

// TemplateFiles lists the files of a template as (name in the artifact,
// path on disk): its record, image and snapshot. A snapshot that needs a
// file outside the template is refused: another host would lack it.
func (m *Manager) TemplateFiles(t *template.Template) ([][2]string, error) {
	var out [][2]string
	if !t.HasImage() {
		return nil, fmt.Errorf("template %s has no image yet: run 'mvmctl template build %s' first", t.Name, t.Name)
	}
	for _, f := range image.EntryFiles() {
		out = append(out, [2]string{template.ImageDir + "/" + f, filepath.Join(t.ImagePath(), f)})
	}
	if t.Snapshot == nil {
		return out, nil
	}
	pins, err := qemu.SnapshotPins(t.SnapshotPath())
	if err != nil {
		return nil, err
	}
	for _, p := range pins {
		if filepath.Dir(p) != t.ImagePath() {
			return nil, fmt.Errorf("template %s: its snapshot needs %s, outside the template; rebuild it with 'mvmctl template build %s --snapshot'", t.Name, p, t.Name)
		}
	}
	ents, err := os.ReadDir(t.SnapshotPath())
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		out = append(out, [2]string{template.SnapshotDir + "/" + e.Name(), filepath.Join(t.SnapshotPath(), e.Name())})
	}
	return out, nil
}

// TemplateImport takes in a template whose files were unpacked into src
// (image/, snapshot/ and the record given as t) under the name t.Name:
// it relocates the snapshot onto this host's paths and moves it into the
// store. An existing template of that name is refused unless replace.
func (m *Manager) TemplateImport(ctx context.Context, t *template.Template, src string, replace bool) (*template.Template, error) {
	ts := m.Templates()
	unlock, err := ts.Lock(t.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if ts.Exists(t.Name) {
		if !replace {
			return nil, fmt.Errorf("template %q already exists: pull it under another name (template pull REF NAME) or delete it first", t.Name)
		}
		if users := m.TemplateUsers(t.Name); len(users) > 0 {
			return nil, fmt.Errorf("template %q is used by VMs %s: remove them before replacing it", t.Name, strings.Join(users, ", "))
		}
		if err := ts.Remove(t.Name); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(ts.Root(), 0o700); err != nil {
		return nil, err
	}
	_ = os.Remove(filepath.Join(src, template.RecordFile))
	dst := ts.Dir(t.Name)
	if err := os.Rename(src, dst); err != nil {
		return nil, fmt.Errorf("template %s: %w", t.Name, err)
	}
	t.Dir = dst
	fail := func(err error) (*template.Template, error) {
		os.RemoveAll(dst)
		return nil, fmt.Errorf("template %s: %w", t.Name, err)
	}
	if t.Snapshot != nil {
		if err := relocateTemplateSnapshot(ctx, t); err != nil {
			return fail(err)
		}
	}
	if err := ts.Put(t); err != nil {
		return fail(err)
	}
	return t, nil
}
