package image

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Host locations of installed distro kernels; variables so tests can point
// them at fake trees.
var (
	bootDir     = "/boot"
	modulesRoot = "/lib/modules"
)

// kernelInfo is an installed kernel and its module tree.
type kernelInfo struct {
	Image      string // /boot/vmlinuz-<release>
	Release    string
	ModulesDir string // /lib/modules/<release>
}

// debArch maps a Go architecture to Debian's name for it.
func debArch(goarch string) (string, error) {
	switch goarch {
	case "amd64":
		return "amd64", nil
	case "arm64":
		return "arm64", nil
	}
	return "", fmt.Errorf("no Debian kernel flavour known for architecture %q (supported: amd64, arm64)", goarch)
}

// findKernel picks the newest installed Debian cloud kernel for debarch whose
// module tree is present, falling back to any kernel with modules.
func findKernel(debarch string) (*kernelInfo, error) {
	return findKernelIn(bootDir, modulesRoot, debarch)
}

// kernelFor finds the kernel a goarch guest boots: the host's own installed
// kernel for the host's arch, else the one setup unpacked into the arch tree
// (never the host's /boot: that holds the host's arch only).
func kernelFor(goarch string) (*kernelInfo, error) {
	da, err := debArch(goarch)
	if err != nil {
		return nil, err
	}
	if !Foreign(goarch) {
		return findKernel(da)
	}
	tree, err := archTree(goarch)
	if err != nil {
		return nil, err
	}
	k, err := findKernelIn(filepath.Join(tree, "boot"), filepath.Join(tree, "lib", "modules"), da)
	if err != nil {
		return nil, fmt.Errorf("%s guest kernel: %w (fill %s with `%s %s`)", goarch, err, tree, SetupArchCommand, goarch)
	}
	return k, nil
}

// findKernelIn is findKernel over the given boot and modules directories.
func findKernelIn(bootDir, modulesRoot, debarch string) (*kernelInfo, error) {
	images, err := filepath.Glob(filepath.Join(bootDir, "vmlinuz-*"))
	if err != nil {
		return nil, fmt.Errorf("list kernels in %s: %w", bootDir, err)
	}
	var cloud, other []kernelInfo
	for _, img := range images {
		rel := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		if rel == "" {
			continue
		}
		md := filepath.Join(modulesRoot, rel)
		if _, err := os.Stat(filepath.Join(md, "modules.dep")); err != nil {
			continue
		}
		k := kernelInfo{Image: img, Release: rel, ModulesDir: md}
		if strings.HasSuffix(rel, "-cloud-"+debarch) {
			cloud = append(cloud, k)
		} else {
			other = append(other, k)
		}
	}
	for _, set := range [][]kernelInfo{cloud, other} {
		if len(set) == 0 {
			continue
		}
		sort.Slice(set, func(i, j int) bool { return versionLess(set[j].Release, set[i].Release) })
		k := set[0]
		f, err := os.Open(k.Image)
		if err != nil {
			if errors.Is(err, os.ErrPermission) {
				return nil, fmt.Errorf("kernel %s is not readable by this user: %w", k.Image, err)
			}
			return nil, fmt.Errorf("open kernel: %w", err)
		}
		f.Close()
		return &k, nil
	}
	return nil, fmt.Errorf("no kernel with modules found in %s and %s: install one with `apt-get install linux-image-cloud-%s`",
		bootDir, modulesRoot, debarch)
}

// versionLess compares kernel release strings the way people read them:
// runs of digits numerically, everything else bytewise.
func versionLess(a, b string) bool {
	for a != "" && b != "" {
		ca, ra := versionChunk(a)
		cb, rb := versionChunk(b)
		if c := compareChunk(ca, cb); c != 0 {
			return c < 0
		}
		a, b = ra, rb
	}
	return len(a) < len(b)
}

func versionChunk(s string) (chunk, rest string) {
	digit := s[0] >= '0' && s[0] <= '9'
	i := 1
	for i < len(s) && (s[i] >= '0' && s[i] <= '9') == digit {
		i++
	}
	return s[:i], s[i:]
}

func compareChunk(a, b string) int {
	da := a[0] >= '0' && a[0] <= '9'
	db := b[0] >= '0' && b[0] <= '9'
	if da && db {
		a = strings.TrimLeft(a, "0")
		b = strings.TrimLeft(b, "0")
		if len(a) != len(b) {
			return len(a) - len(b)
		}
	}
	return strings.Compare(a, b)
}
