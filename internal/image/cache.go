package image

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

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
		ConfigDrive:   m.ConfigDrive,
		DefaultCPUs:   m.DefaultCPUs,
		DefaultMemMiB: m.DefaultMemMiB,
	}
	if fi, err := os.Stat(filepath.Join(dir, vmlinuxFile)); err == nil && fi.Mode().IsRegular() {
		a.Vmlinux = filepath.Join(dir, vmlinuxFile)
	}
	for _, p := range []string{a.Kernel, a.Initrd, a.Rootfs} {
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("cache entry %s: missing %s", dir, filepath.Base(p))
		}
	}
	return a, nil
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

// CachedByName returns the complete entry <cache>/by-name/<name> points at,
// without building anything.
func CachedByName(cacheDir, name string) (*Artifacts, error) {
	target, err := os.Readlink(filepath.Join(cacheDir, "by-name", name))
	if err != nil {
		return nil, fmt.Errorf("image %s is not in the cache", name)
	}
	d := filepath.Base(target)
	return loadEntry(filepath.Join(cacheDir, d), d)
}

// LoadDir reads an image whose files sit in dir under their cache names
// (a template's copy of a cache entry), wherever dir is.
func LoadDir(dir string) (*Artifacts, error) {
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if err != nil {
		return nil, err
	}
	var m struct {
		Digest string `json:"digest"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", dir, err)
	}
	hexd, ok := strings.CutPrefix(m.Digest, "sha256:")
	if !ok || len(hexd) != 64 {
		return nil, fmt.Errorf("manifest %s: bad digest %q", dir, m.Digest)
	}
	return loadEntry(dir, hexd)
}

// EntryFiles are the file names of an image in its directory, the ones a
// copy of it needs.
func EntryFiles() []string { return []string{kernelFile, initrdFile, rootfsFile, manifestFile} }
