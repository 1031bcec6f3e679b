package image

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
)

// DefaultArchDir holds the guest inputs of foreign architectures, one tree
// per Debian architecture (boot/, lib/modules/, bin/busybox), unpacked there
// by scripts/setup-arch.sh. Not the user's cache: setup runs as root and the
// tree is shared by every user of the host, like /boot.
const DefaultArchDir = "/var/cache/mvm/arch"

// SetupArchCommand is what fills an arch tree, for error messages.
const SetupArchCommand = "scripts/setup-arch.sh"

// ArchDir is where the guest inputs for goarch live when goarch is not the
// host's: $MVM_ARCH_DIR/<debarch>, else DefaultArchDir/<debarch>.
func ArchDir(goarch string) (string, error) {
	da, err := debArch(goarch)
	if err != nil {
		return "", err
	}
	root := os.Getenv("MVM_ARCH_DIR")
	if root == "" {
		root = DefaultArchDir
	}
	return filepath.Join(root, da), nil
}

// Foreign reports whether goarch ("" = host) is not the host's architecture.
func Foreign(goarch string) bool { return goarch != "" && goarch != runtime.GOARCH }

// archTree is the root the kernel and busybox of goarch come from: "/" for
// the host's own, the setup-made tree otherwise.
func archTree(goarch string) (string, error) {
	if !Foreign(goarch) {
		return "/", nil
	}
	dir, err := ArchDir(goarch)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("no %s guest inputs in %s (kernel, modules, busybox): run `%s %s` (make setup does it): %w",
			goarch, dir, SetupArchCommand, goarch, err)
	}
	return dir, nil
}

// findBusyboxFor is findBusybox for goarch: a foreign arch's busybox comes
// from its tree and must be static and of that arch.
func findBusyboxFor(goarch string) (string, error) {
	if !Foreign(goarch) {
		return findBusybox()
	}
	tree, err := archTree(goarch)
	if err != nil {
		return "", err
	}
	for _, p := range []string{"bin/busybox", "usr/bin/busybox"} {
		p = filepath.Join(tree, p)
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := checkStatic(p); err != nil {
			return "", err
		}
		if err := checkArch(p, goarch); err != nil {
			return "", err
		}
		return p, nil
	}
	return "", fmt.Errorf("no busybox in %s: run `%s %s`", tree, SetupArchCommand, goarch)
}

// appletNamesMarker starts busybox's applet_names table: the sorted,
// NUL-separated applet names begin with "[" and "[[" in every build that has
// the test applets (Debian's has).
var appletNamesMarker = []byte("\x00[\x00[[\x00")

// appletsFromBinary reads the applet list out of a busybox binary that this
// host cannot run (another architecture): the names table is plain bytes,
// the same on every architecture.
func appletsFromBinary(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w", err)
	}
	i := bytes.Index(b, appletNamesMarker)
	if i < 0 {
		return nil, fmt.Errorf("busybox %s: no applet name table found", path)
	}
	var names []string
	for rest := b[i+1:]; ; {
		n := bytes.IndexByte(rest, 0)
		if n <= 0 || n > 64 {
			break // the table ends with an empty name
		}
		names = append(names, string(rest[:n]))
		rest = rest[n+1:]
	}
	if len(names) < 10 || !sort.StringsAreSorted(names) {
		return nil, errors.New("busybox " + path + ": applet name table unreadable")
	}
	return names, nil
}

// binfmtQEMU names binfmt_misc entries qemu-user-static registers.
var binfmtQEMU = map[string]string{"amd64": "qemu-x86_64", "arm64": "qemu-aarch64"}

// binfmtFor reports whether this host runs goarch binaries through
// binfmt_misc (what mmdebstrap needs to bootstrap a foreign rootfs).
func binfmtFor(goarch string) bool {
	_, err := os.Stat(filepath.Join("/proc/sys/fs/binfmt_misc", binfmtQEMU[goarch]))
	return err == nil
}

// GuestArch validates a requested guest architecture and returns its GOARCH
// name; "" is the host's, and the kernel's names (uname -m) are accepted.
func GuestArch(a string) (string, error) {
	switch a {
	case "":
		return runtime.GOARCH, nil
	case "amd64", "x86_64":
		return "amd64", nil
	case "arm64", "aarch64":
		return "arm64", nil
	}
	return "", fmt.Errorf("unsupported guest architecture %q (supported: amd64, arm64)", a)
}
