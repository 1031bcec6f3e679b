package image

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// nixBuildTimeout bounds one `nix build`; a cold kernel build takes long.
const nixBuildTimeout = 2 * time.Hour

// ErrNixMissing is returned for flake images on hosts without Nix.
var ErrNixMissing = errors.New("nix not found on PATH: flake images are built with Nix (flakes enabled); install it from https://nixos.org/download and try again")

// Files a flake's build output may hold, in order of preference.
var (
	nixKernelNames = []string{"vmlinux", "bzImage", "vmlinuz", "Image"}
	nixRootfsNames = []string{"rootfs.ext4", "rootfs.squashfs", "rootfs.tar"}
)

// nixOutput is what `nix build` produced for a flake.
type nixOutput struct {
	dir    string // store path
	kernel string // "" when the output has none
	rootfs string
}

// flakeSafeRE bounds what is passed to nix as one argv word.
var flakeSafeRE = lazyRE(`^[A-Za-z0-9._~:/?&=+#@%,-]+$`)

// checkFlakeRef rejects references nix would misread as options or that
// carry control characters.
func checkFlakeRef(ref string) error {
	if len(ref) > 1024 || !flakeSafeRE.MatchString(ref) || strings.HasPrefix(ref, "-") {
		return fmt.Errorf("flake reference %q: want something like .#vm, /path/to/flake#vm or github:owner/repo#vm", ref)
	}
	return nil
}

// FlakeImageRef is the image reference (for Resolve and `up --image`) of a
// flake; a local path is made absolute so the reference works from any
// directory later.
func FlakeImageRef(ref string) string {
	return "flake:" + absFlake(ref)
}

func absFlake(ref string) string {
	p, frag, hasFrag := strings.Cut(ref, "#")
	if p == "." || p == ".." || strings.HasPrefix(p, "./") || strings.HasPrefix(p, "../") || strings.HasPrefix(p, "/") {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
	}
	if hasFrag {
		return p + "#" + frag
	}
	return p
}

// ResolveFlake returns a recipe that builds the flake with `nix build` and
// boots its output: a kernel (vmlinux, bzImage, vmlinuz or Image, virtio
// built in) and rootfs.ext4, rootfs.squashfs or rootfs.tar, to which the
// agent and /etc/mvm are added like any other base. Nix runs when the
// recipe is built, not here.
func ResolveFlake(ref string) (*Recipe, error) {
	ref = absFlake(ref)
	if err := checkFlakeRef(ref); err != nil {
		return nil, err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	r := &Recipe{
		Name:        flakeName(ref),
		Description: "Nix flake " + ref,
		Kernel:      KernelSpec{Source: KernelNix},
		Rootfs:      RootfsSpec{Source: RootfsNix, Flake: ref},
		Access:      AccessSpec{Console: true},
		origin:      "flake:" + ref,
		base:        cwd,
	}
	r.applyDefaults()
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("flake %s: %w", ref, err)
	}
	return r, nil
}

var nameJunkRE = lazyRE(`[^a-z0-9-]+`)

// flakeName derives an image name: the attribute's last part, else the
// flake's directory or repository name.
func flakeName(ref string) string {
	p, frag, _ := strings.Cut(ref, "#")
	cand := ""
	if frag != "" {
		parts := strings.Split(frag, ".")
		cand = parts[len(parts)-1]
	}
	if cand == "" || cand == "default" {
		p, _, _ = strings.Cut(p, "?")
		p = strings.TrimRight(p, "/")
		if i := strings.LastIndexAny(p, "/:"); i >= 0 {
			p = p[i+1:]
		}
		cand = p
	}
	n := strings.Trim(nameJunkRE.ReplaceAllString(strings.ToLower(cand), "-"), "-")
	if len(n) > 63 {
		n = strings.Trim(n[:63], "-")
	}
	if n == "" {
		return "flake"
	}
	return n
}

// buildNix runs `nix build` for the recipe's flake in the recipe's
// directory and finds the kernel and root filesystem in its output.
func buildNix(ctx context.Context, r *Recipe) (*nixOutput, error) {
	nix, err := exec.LookPath("nix")
	if err != nil {
		return nil, ErrNixMissing
	}
	ctx, cancel := context.WithTimeout(ctx, nixBuildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, nix, "--extra-experimental-features", "nix-command flakes",
		"build", "--no-link", "--print-out-paths", r.Rootfs.Flake)
	cmd.Dir = r.base
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 4000 {
			msg = "..." + msg[len(msg)-4000:]
		}
		return nil, fmt.Errorf("nix build %s: %w: %s", r.Rootfs.Flake, errors.Join(err, ctx.Err()), msg)
	}
	out := ""
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = l
			break
		}
	}
	if out == "" || !path.IsAbs(out) {
		return nil, fmt.Errorf("nix build %s printed no output path (stdout %q)", r.Rootfs.Flake, stdout.String())
	}
	return collectNixOutput(out)
}

// collectNixOutput finds the kernel and root filesystem in a build output.
func collectNixOutput(dir string) (*nixOutput, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("nix output: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("nix output %s is a file; want a directory with a kernel and %s", dir, strings.Join(nixRootfsNames, ", "))
	}
	o := &nixOutput{dir: dir}
	find := func(names []string) string {
		for _, n := range names {
			p := filepath.Join(dir, n)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				return p
			}
		}
		return ""
	}
	o.kernel = find(nixKernelNames)
	o.rootfs = find(nixRootfsNames)
	if o.rootfs == "" {
		var have []string
		if ents, err := os.ReadDir(dir); err == nil {
			for _, e := range ents {
				have = append(have, e.Name())
			}
		}
		return nil, fmt.Errorf("nix output %s has no root filesystem (want one of %s; it has: %s)",
			dir, strings.Join(nixRootfsNames, ", "), strings.Join(have, ", "))
	}
	return o, nil
}

// stageNixRootfs unpacks the flake's root filesystem into root. Owners
// survive for tarballs always and for ext4/squashfs images when building
// as root (the unpacking tools can only chown then).
func stageNixRootfs(ctx context.Context, root, img string) (*stager, error) {
	switch {
	case strings.HasSuffix(img, ".tar"):
		return stageTarball(ctx, root, img)
	case strings.HasSuffix(img, ".ext4"):
		dfs, err := lookTool("debugfs", "e2fsprogs")
		if err != nil {
			return nil, err
		}
		if err := run(ctx, os.Environ(), dfs, "-R", "rdump / "+root, img); err != nil {
			return nil, fmt.Errorf("unpack %s: %w", filepath.Base(img), err)
		}
		os.Remove(filepath.Join(root, "lost+found"))
	case strings.HasSuffix(img, ".squashfs"):
		us, err := lookTool("unsquashfs", "squashfs-tools")
		if err != nil {
			return nil, err
		}
		if err := run(ctx, os.Environ(), us, "-f", "-q", "-n", "-d", root, img); err != nil {
			return nil, fmt.Errorf("unpack %s: %w", filepath.Base(img), err)
		}
	default:
		return nil, fmt.Errorf("unsupported root filesystem %s", img)
	}
	s := &stager{root: root, owners: map[string]owner{}}
	if err := s.rescan(); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if err := s.ownersFromTree(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// ownersFromTree records the staged files' owners (they were unpacked by
// root, so they are the image's).
func (s *stager) ownersFromTree() error {
	for _, p := range s.paths {
		fi, err := os.Lstat(filepath.Join(s.root, p))
		if err != nil {
			return err
		}
		if uid, gid, ok := fileOwner(fi); ok && (uid != 0 || gid != 0) {
			s.owners[p] = owner{uid: uid, gid: gid}
		}
	}
	return nil
}
