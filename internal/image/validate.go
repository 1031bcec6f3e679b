package image

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
)

var (
	recipeNameRE = lazyRE(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	tagRE        = lazyRE(`^[a-z0-9][a-z0-9.+-]{0,31}$`)
	envKeyRE     = lazyRE(`^[A-Za-z_][A-Za-z0-9_]*$`)
	debPackageRE = lazyRE(`^[a-z0-9][a-z0-9+.-]+$`)
	suiteRE      = lazyRE(`^[a-z][a-z0-9-]{1,31}$`)
	userRE       = lazyRE(`^([a-z_][a-z0-9_-]{0,31}|[0-9]{1,10})$`)
)

// reservedPaths are written by the builder; recipes may not replace them.
var reservedPaths = []string{"/sbin/mvm-agent", "/etc/mvm"}

// Validate checks a decoded recipe (defaults applied) and reports every
// problem, not just the first.
func (r *Recipe) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	if !recipeNameRE.MatchString(r.Name) {
		bad("name %q: want lower-case letters, digits and dashes (at most 63)", r.Name)
	}
	if len(r.Description) > 200 || strings.ContainsAny(r.Description, "\n\r") {
		bad("description: one line of at most 200 characters")
	}
	seen := map[string]bool{}
	for _, t := range r.Tags {
		if !tagRE.MatchString(t) {
			bad("tags: %q: want lower-case letters, digits, '.', '+', '-'", t)
		}
		if seen[t] {
			bad("tags: %q listed twice", t)
		}
		seen[t] = true
	}

	if r.Kernel.Source != KernelDebian && (r.Kernel.Package != "" || r.Kernel.Deb != "") {
		bad("kernel.package and kernel.deb are only used with kernel.source = %q", KernelDebian)
	}
	switch r.Kernel.Source {
	case KernelDebian:
		if r.Kernel.Path != "" {
			bad("kernel.path is only used with kernel.source = %q", KernelFile)
		}
		if r.Kernel.Package != "" && r.Kernel.Deb != "" {
			bad("kernel.package and kernel.deb: set one, not both")
		}
		if p := r.Kernel.Package; p != "" && (!debPackageRE.MatchString(p) || !strings.HasPrefix(p, "linux-image-")) {
			bad("kernel.package %q: want a linux-image-* Debian package name", p)
		}
		if d := r.Kernel.Deb; d != "" && r.base == "" && !path.IsAbs(d) {
			bad("kernel.deb %q: relative paths need a recipe file", d)
		}
	case KernelNix:
		if r.Rootfs.Source != RootfsNix {
			bad("kernel.source = %q needs rootfs.source = %q (the kernel comes from the flake's output)", KernelNix, RootfsNix)
		}
		if r.Kernel.Path != "" {
			bad("kernel.path is only used with kernel.source = %q", KernelFile)
		}
	case KernelFile:
		if r.Kernel.Path == "" {
			bad("kernel.source = %q needs kernel.path", KernelFile)
		} else if r.base == "" && !path.IsAbs(r.Kernel.Path) {
			bad("kernel.path %q: relative paths need a recipe file", r.Kernel.Path)
		}
	default:
		bad("kernel.source %q: want %q, %q or %q", r.Kernel.Source, KernelDebian, KernelFile, KernelNix)
	}

	rf := r.Rootfs
	if rf.Flake != "" && rf.Source != RootfsNix {
		bad("rootfs.flake only applies to rootfs.source = %q", RootfsNix)
	}
	switch rf.Source {
	case RootfsMinimal:
		if rf.Suite != "" || len(rf.Packages) > 0 || rf.Image != "" {
			bad("rootfs.suite, rootfs.packages and rootfs.image do not apply to rootfs.source = %q", RootfsMinimal)
		}
	case RootfsDebian:
		if !suiteRE.MatchString(rf.Suite) {
			bad("rootfs.suite %q: not a Debian suite name", rf.Suite)
		}
		if rf.Image != "" {
			bad("rootfs.image only applies to rootfs.source = %q", RootfsOCI)
		}
		pk := map[string]bool{}
		for _, p := range rf.Packages {
			if !debPackageRE.MatchString(p) {
				bad("rootfs.packages: %q is not a Debian package name", p)
			}
			if pk[p] {
				bad("rootfs.packages: %q listed twice", p)
			}
			pk[p] = true
		}
	case RootfsOCI:
		if rf.Image == "" {
			bad("rootfs.source = %q needs rootfs.image", RootfsOCI)
		}
		if rf.Suite != "" || len(rf.Packages) > 0 {
			bad("rootfs.suite and rootfs.packages only apply to rootfs.source = %q", RootfsDebian)
		}
		if rf.Image != "" {
			if ref, err := parseOCIRef(rf.Image); err != nil {
				bad("rootfs.image: %v", err)
			} else if ref.isLocal() && r.base == "" && !path.IsAbs(ref.Path) {
				bad("rootfs.image %q: relative paths need a recipe file", rf.Image)
			}
		}
	case RootfsNix:
		if rf.Flake == "" {
			bad("rootfs.source = %q needs rootfs.flake", RootfsNix)
		} else if err := checkFlakeRef(rf.Flake); err != nil {
			bad("rootfs.flake: %v", err)
		}
		if rf.Suite != "" || len(rf.Packages) > 0 || rf.Image != "" {
			bad("rootfs.suite, rootfs.packages and rootfs.image do not apply to rootfs.source = %q", RootfsNix)
		}
	default:
		bad("rootfs.source %q: want %q, %q, %q or %q", rf.Source, RootfsMinimal, RootfsDebian, RootfsOCI, RootfsNix)
	}
	if rf.FreeMiB < 0 || rf.FreeMiB > 1<<20 {
		bad("rootfs.free_mib %d: want 0 to 1048576", rf.FreeMiB)
	}

	paths := map[string]bool{}
	for i, f := range r.Files {
		where := fmt.Sprintf("files[%d] (%s)", i, f.Path)
		if err := checkImagePath(f.Path); err != nil {
			bad("%s: %v", where, err)
		}
		if paths[f.Path] {
			bad("%s: path listed twice", where)
		}
		paths[f.Path] = true
		switch {
		case f.Src != "" && f.Content != "":
			bad("%s: set content or src, not both", where)
		case f.Src != "" && r.base == "" && !path.IsAbs(f.Src):
			bad("%s: src %q: relative sources need a recipe file", where, f.Src)
		}
		if f.Mode.Perm > 0o7777 {
			bad("%s: mode %o out of range", where, f.Mode.Perm)
		}
	}

	for k, v := range r.Env {
		if !envKeyRE.MatchString(k) {
			bad("env: %q is not a valid variable name", k)
		}
		if strings.ContainsRune(v, 0) {
			bad("env.%s: value contains NUL", k)
		}
	}

	names := map[string]bool{}
	for i, s := range r.Services {
		where := fmt.Sprintf("services[%d] (%s)", i, s.Name)
		if !recipeNameRE.MatchString(s.Name) {
			bad("%s: name: want lower-case letters, digits and dashes", where)
		}
		if names[s.Name] {
			bad("%s: name used twice", where)
		}
		names[s.Name] = true
		if err := checkArgv(s.Command); err != nil {
			bad("%s: command: %v", where, err)
		}
		if !userRE.MatchString(s.User) {
			bad("%s: user %q: want a user name or numeric uid", where, s.User)
		}
	}

	names = map[string]bool{}
	for i, h := range r.Health {
		where := fmt.Sprintf("health[%d] (%s)", i, h.Name)
		if !recipeNameRE.MatchString(h.Name) {
			bad("%s: name: want lower-case letters, digits and dashes", where)
		}
		if names[h.Name] {
			bad("%s: name used twice", where)
		}
		names[h.Name] = true
		if err := checkArgv(h.Command); err != nil {
			bad("%s: command: %v", where, err)
		}
		iv, to := time.Duration(h.Interval), time.Duration(h.Timeout)
		if iv < time.Second || iv > time.Hour {
			bad("%s: interval %v: want 1s to 1h", where, iv)
		}
		if to < 100*time.Millisecond || to > iv {
			bad("%s: timeout %v: want at least 100ms and at most the interval", where, to)
		}
	}

	if c := r.Resources.CPUs; c < 0 || c > 255 {
		bad("resources.cpus %d: want 1 to 255", c)
	}
	if m := r.Resources.MemoryMiB; m < 0 || (m > 0 && m < 64) || m > 1<<20 {
		bad("resources.memory_mib %d: want at least 64", m)
	}
	return errors.Join(errs...)
}

// checkImagePath accepts clean absolute in-image paths the builder may write.
func checkImagePath(p string) error {
	if p == "" || p[0] != '/' || path.Clean(p) != p || p == "/" {
		return errors.New("want a clean absolute path below /")
	}
	if strings.ContainsAny(p, "\x00\n\r\t\"\\") {
		return errors.New("path contains a control character, quote or backslash")
	}
	for _, res := range reservedPaths {
		if p == res || strings.HasPrefix(p, res+"/") {
			return fmt.Errorf("%s is written by mvm", res)
		}
	}
	return nil
}

func checkArgv(argv []string) error {
	if len(argv) == 0 || argv[0] == "" {
		return errors.New("want a non-empty argv list")
	}
	for _, a := range argv {
		if strings.ContainsRune(a, 0) {
			return errors.New("argument contains NUL")
		}
	}
	return nil
}
