package image

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// build writes the entry into a temporary directory and renames it into
// place, so a crash never leaves a half-built entry under the digest name.
func build(ctx context.Context, cacheDir, entry, digestHex string, r *Recipe, in *inputs, opts BuildOptions) (err error) {
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
	if err := buildRootfs(ctx, filepath.Join(tmp, rootfsFile), tmp, digestHex, r, in); err != nil {
		return err
	}
	opts.progress("finalize")
	// The inputs were hashed before the build; refuse to label the entry with
	// that digest if any of them changed meanwhile.
	for _, i := range in.hashed {
		switch i.Role {
		case "bootstrap":
			continue // sealed read-only in the cache; hashed when made
		case "oci-image":
			continue // not a file; the content digest was checked while reading
		}
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
		Name:          r.Name,
		Digest:        "sha256:" + digestHex,
		Arch:          in.arch,
		Kernel:        kernelFile,
		KernelRelease: in.kernel.Release,
		Initrd:        initrdFile,
		Rootfs:        rootfsFile,
		Console:       r.Access.Console,
		ConfigDrive:   guestcfg.DriveFormat, // the agent built with this tree reads it
		DefaultCPUs:   r.Resources.CPUs,
		DefaultMemMiB: r.Resources.MemoryMiB,
		Inputs:        in.hashed,
		Recipe:        json.RawMessage(r.canonical()),
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
