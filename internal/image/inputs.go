package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
)

// inputs are the resolved host files one build reads.
type inputs struct {
	arch     string
	kernel   *kernelInfo
	modules  []module
	busybox  string            // minimal rootfs only
	agent    string            // static mvm-agent
	base     *bootstrapTarball // debian rootfs only
	oci      *ociSource        // oci rootfs only
	nix      *nixOutput        // nix rootfs only
	baseEnv  []string          // KEY=VALUE from the base image (oci); recipe env wins
	progress func(string)
	srcs     map[int]string // recipe file index -> host source path
	hashed   []Input
}

func resolveInputs(ctx context.Context, r *Recipe, cacheDir string, opts BuildOptions) (*inputs, error) {
	arch := opts.Arch
	if arch == "" {
		arch = runtime.GOARCH
	}
	// A foreign arch's kernel and busybox come from its arch tree (ArchDir);
	// nothing of the guest's is run here except by mmdebstrap.
	if Foreign(arch) && r.Rootfs.Source == RootfsDebian && !binfmtFor(arch) {
		return nil, fmt.Errorf("a debian rootfs for %s needs the host to run %s binaries (qemu-user-static with binfmt_misc); the minimal, oci and nix sources need nothing", arch, arch)
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
	in := &inputs{arch: arch, agent: agent, srcs: map[int]string{}, progress: opts.progress}
	add := func(role, path string) error {
		sum, err := hashFileCached(cacheDir, path)
		if err != nil {
			return fmt.Errorf("%s: %w", role, err)
		}
		in.hashed = append(in.hashed, Input{Role: role, Path: path, SHA256: sum})
		return nil
	}

	if r.Rootfs.Source == RootfsNix {
		opts.progress("nix build " + r.Rootfs.Flake)
		if in.nix, err = buildNix(ctx, r); err != nil {
			return nil, err
		}
	}
	switch r.Kernel.Source {
	case KernelNix:
		if in.nix == nil || in.nix.kernel == "" {
			return nil, fmt.Errorf("nix output %s has no kernel (want one of %s)", in.nix.dir, strings.Join(nixKernelNames, ", "))
		}
		in.kernel = &kernelInfo{Image: in.nix.kernel}
	case KernelDebian:
		k, deb, err := debianKernel(ctx, r, cacheDir, arch, da, opts.progress)
		if err != nil {
			return nil, err
		}
		if deb != "" {
			if err := add("kernel-deb", deb); err != nil {
				return nil, err
			}
		}
		mods, err := resolveModules(k.ModulesDir, guestModules, requiredModules)
		if err != nil {
			return nil, err
		}
		in.kernel, in.modules = k, mods
	case KernelFile:
		p, err := filepath.Abs(r.srcPath(r.Kernel.Path))
		if err != nil {
			return nil, err
		}
		in.kernel = &kernelInfo{Image: p}
	default:
		return nil, fmt.Errorf("kernel source %q not supported", r.Kernel.Source)
	}
	if err := add("kernel", in.kernel.Image); err != nil {
		return nil, err
	}
	for _, m := range in.modules {
		if err := add("module:"+m.Name, m.Path); err != nil {
			return nil, err
		}
	}
	if err := add("agent", agent); err != nil {
		return nil, err
	}

	switch r.Rootfs.Source {
	case RootfsMinimal:
		bb, err := findBusyboxFor(arch)
		if err != nil {
			return nil, err
		}
		in.busybox = bb
		if err := add("busybox", bb); err != nil {
			return nil, err
		}
	case RootfsDebian:
		opts.progress("bootstrap")
		t, err := ensureBootstrap(ctx, filepath.Join(cacheDir, bootstrapDir), bootstrapKey{
			Suite: r.Rootfs.Suite, Packages: r.Rootfs.Packages, Arch: da,
		})
		if err != nil {
			return nil, err
		}
		in.base = t
		// The tarball's hash was recorded when it was made; re-hashing
		// hundreds of MiB on every cache hit would cost seconds.
		in.hashed = append(in.hashed, Input{Role: "bootstrap", Path: t.Path, SHA256: t.SHA256})
	case RootfsOCI:
		opts.progress("resolve " + r.Rootfs.Image)
		o, err := resolveOCI(ctx, r, arch)
		if err != nil {
			return nil, err
		}
		in.oci = o
		// Not a file: the digest names the image's content.
		in.hashed = append(in.hashed, Input{Role: "oci-image", Path: r.Rootfs.Image, SHA256: strings.TrimPrefix(o.digest, "sha256:")})
	case RootfsNix:
		if err := add("nix-rootfs", in.nix.rootfs); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("rootfs source %q not supported", r.Rootfs.Source)
	}

	for i, f := range r.Files {
		if f.Src == "" {
			continue
		}
		p, err := filepath.Abs(r.srcPath(f.Src))
		if err != nil {
			return nil, err
		}
		in.srcs[i] = p
		if err := add("file:"+f.Path, p); err != nil {
			return nil, err
		}
	}
	return in, nil
}

// release frees what resolving opened (archive files).
func (in *inputs) release() {
	if in != nil && in.oci != nil {
		in.oci.close()
	}
}

// computeDigest covers the builder version, the recipe's canonical form and
// every input's content; host paths are left out so moving a file does not
// rebuild.
func computeDigest(r *Recipe, in *inputs) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\nrecipe=%s\narch=%s\nkernel_release=%s\n", builderVersion, r.canonical(), in.arch, in.kernel.Release)
	if r.Kernel.Source == KernelDebian {
		fmt.Fprintf(h, "modules=%s\nrequired=%s\n", strings.Join(guestModules, ","), strings.Join(requiredModules, ","))
	}
	for _, i := range in.hashed {
		fmt.Fprintf(h, "%s %s\n", i.Role, i.SHA256)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (in *inputs) progressFn() func(string) {
	if in.progress == nil {
		return func(string) {}
	}
	return in.progress
}
