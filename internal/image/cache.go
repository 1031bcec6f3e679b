package image

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/gofrs/flock"
)

// inputs are the resolved host files one build reads.
type inputs struct {
	arch    string
	kernel  *kernelInfo
	modules []module
	busybox string
	agent   string
	hashed  []Input
}

// Ensure returns the named catalog image, building it into the cache when
// no entry exists for the current inputs. Concurrent callers for the same
// image build it once.
func Ensure(ctx context.Context, name string, opts BuildOptions) (*Artifacts, error) {
	r, err := lookup(name)
	if err != nil {
		return nil, err
	}
	if opts.CacheDir == "" {
		return nil, errors.New("image cache directory not set")
	}
	cacheDir, err := filepath.Abs(opts.CacheDir)
	if err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	in, err := resolveInputs(r, opts)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	digestHex := computeDigest(r, in)
	entry := filepath.Join(cacheDir, digestHex)
	if a, err := loadEntry(entry, digestHex); err == nil {
		linkByName(cacheDir, name, digestHex)
		opts.progress("cached")
		return a, nil
	}

	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	lock := flock.New(filepath.Join(cacheDir, digestHex+".lock"))
	opts.progress("lock")
	locked, err := lock.TryLockContext(ctx, 100*time.Millisecond)
	if err != nil || !locked {
		return nil, fmt.Errorf("image %s: lock cache entry: %w", name, errors.Join(err, ctx.Err()))
	}
	defer lock.Unlock()

	// Another process may have finished the build while we waited.
	if a, err := loadEntry(entry, digestHex); err == nil {
		linkByName(cacheDir, name, digestHex)
		return a, nil
	}
	if _, err := os.Lstat(entry); err == nil {
		slog.Info("removing incomplete image cache entry", "dir", entry)
		if err := os.RemoveAll(entry); err != nil {
			return nil, fmt.Errorf("image %s: remove incomplete entry: %w", name, err)
		}
	}
	start := time.Now()
	if err := build(ctx, cacheDir, entry, digestHex, r, in, opts); err != nil {
		return nil, fmt.Errorf("build image %s: %w", name, err)
	}
	slog.Debug("image built", "name", name, "digest", digestHex, "took", time.Since(start))
	linkByName(cacheDir, name, digestHex)
	return loadEntry(entry, digestHex)
}

func resolveInputs(r recipe, opts BuildOptions) (*inputs, error) {
	arch := opts.Arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	if arch != runtime.GOARCH {
		// Host kernels, busybox --list and mkfs all come from this host.
		return nil, fmt.Errorf("building %s images on a %s host is not supported", arch, runtime.GOARCH)
	}
	da, err := debArch(arch)
	if err != nil {
		return nil, err
	}
	if opts.AgentPath == "" {
		return nil, errors.New("agent binary path not set")
	}
	agent, err := filepath.Abs(opts.AgentPath)
	if err != nil {
		return nil, err
	}
	if err := checkStatic(agent); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := checkArch(agent, arch); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	k, err := findKernel(da)
	if err != nil {
		return nil, err
	}
	mods, err := resolveModules(k.ModulesDir, r.modules, r.required)
	if err != nil {
		return nil, err
	}
	bb, err := findBusybox()
	if err != nil {
		return nil, err
	}
	in := &inputs{arch: arch, kernel: k, modules: mods, busybox: bb, agent: agent}
	add := func(role, path string) error {
		sum, err := hashFile(path)
		if err != nil {
			return fmt.Errorf("hash %s: %w", role, err)
		}
		in.hashed = append(in.hashed, Input{Role: role, Path: path, SHA256: sum})
		return nil
	}
	if err := add("kernel", k.Image); err != nil {
		return nil, err
	}
	for _, m := range mods {
		if err := add("module:"+m.Name, m.Path); err != nil {
			return nil, err
		}
	}
	if err := add("agent", agent); err != nil {
		return nil, err
	}
	if err := add("busybox", bb); err != nil {
		return nil, err
	}
	return in, nil
}

// computeDigest covers the builder version, the recipe and every input's
// content; host paths are left out so moving a file does not rebuild.
func computeDigest(r recipe, in *inputs) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\narch=%s\nkernel_release=%s\n", builderVersion, r.fingerprint(), in.arch, in.kernel.Release)
	for _, i := range in.hashed {
		fmt.Fprintf(h, "%s %s\n", i.Role, i.SHA256)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// loadEntry returns a complete cache entry. An entry is complete when its
// manifest exists, names this digest and every artifact is present.
func loadEntry(dir, digestHex string) (*Artifacts, error) {
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", dir, err)
	}
	if m.Digest != "sha256:"+digestHex {
		return nil, fmt.Errorf("manifest %s: digest %s does not match", dir, m.Digest)
	}
	a := &Artifacts{
		Name:          m.Name,
		Digest:        m.Digest,
		Dir:           dir,
		Kernel:        filepath.Join(dir, m.Kernel),
		KernelRelease: m.KernelRelease,
		Initrd:        filepath.Join(dir, m.Initrd),
		Rootfs:        filepath.Join(dir, m.Rootfs),
		Console:       m.Console,
		DefaultCPUs:   m.DefaultCPUs,
		DefaultMemMiB: m.DefaultMemMiB,
	}
	for _, p := range []string{a.Kernel, a.Initrd, a.Rootfs} {
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("cache entry %s: missing %s", dir, filepath.Base(p))
		}
	}
	return a, nil
}

// build writes the entry into a temporary directory and renames it into
// place, so a crash never leaves a half-built entry under the digest name.
func build(ctx context.Context, cacheDir, entry, digestHex string, r recipe, in *inputs, opts BuildOptions) (err error) {
	tmp, err := os.MkdirTemp(cacheDir, ".tmp-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	opts.progress("kernel")
	if err := copyFile(in.kernel.Image, filepath.Join(tmp, kernelFile)); err != nil {
		return fmt.Errorf("copy kernel: %w", err)
	}
	opts.progress("initramfs")
	if err := buildInitramfs(filepath.Join(tmp, initrdFile), in.agent, in.modules); err != nil {
		return err
	}
	opts.progress("rootfs")
	if err := buildRootfs(ctx, filepath.Join(tmp, rootfsFile), tmp, in.busybox, in.agent, digestHex, r.freeMiB); err != nil {
		return err
	}
	opts.progress("finalize")
	// The inputs were hashed before the build; refuse to label the entry with
	// that digest if any of them changed meanwhile.
	for _, i := range in.hashed {
		sum, err := hashFile(i.Path)
		if err != nil {
			return fmt.Errorf("re-hash %s: %w", i.Role, err)
		}
		if sum != i.SHA256 {
			return fmt.Errorf("%s %s changed during the build; try again", i.Role, i.Path)
		}
	}
	m := manifest{
		Builder:       builderVersion,
		Name:          r.name,
		Digest:        "sha256:" + digestHex,
		Arch:          in.arch,
		Kernel:        kernelFile,
		KernelRelease: in.kernel.Release,
		Initrd:        initrdFile,
		Rootfs:        rootfsFile,
		Console:       r.console,
		DefaultCPUs:   r.cpus,
		DefaultMemMiB: r.memMiB,
		Inputs:        in.hashed,
	}
	for _, mod := range in.modules {
		m.Modules = append(m.Modules, mod.FileName())
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, manifestFile), append(mb, '\n'), 0o600); err != nil {
		return err
	}
	for _, f := range []string{kernelFile, initrdFile, rootfsFile, manifestFile} {
		if err := sealFile(filepath.Join(tmp, f)); err != nil {
			return err
		}
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, entry); err != nil {
		return fmt.Errorf("publish cache entry: %w", err)
	}
	return syncDir(cacheDir)
}

// sealFile makes a cached artifact read-only and durable.
func sealFile(p string) error {
	if err := os.Chmod(p, 0o444); err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", p, err)
	}
	return nil
}

func syncDir(p string) error {
	d, err := os.Open(p)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", p, err)
	}
	return nil
}

// linkByName points <cache>/by-name/<name> at the entry. The link is for
// people browsing the cache, so failures are only logged.
func linkByName(cacheDir, name, digestHex string) {
	dir := filepath.Join(cacheDir, "by-name")
	link := filepath.Join(dir, name)
	target := filepath.Join("..", digestHex)
	if cur, err := os.Readlink(link); err == nil && cur == target {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		slog.Debug("by-name link", "err", err)
		return
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(dir, "."+name+".tmp-"+hex.EncodeToString(rnd[:]))
	if err := os.Symlink(target, tmp); err != nil {
		slog.Debug("by-name link", "err", err)
		return
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		slog.Debug("by-name link", "err", err)
	}
}
