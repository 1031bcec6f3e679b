package image

import (
	"archive/tar"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// kernelsDir holds kernel packages unpacked by the SHA-256 of their .deb.
const kernelsDir = "kernels"

// Bounds on what a kernel package may make us write.
const (
	maxKernelImage  = 256 << 20
	maxKernelUnpack = 4 << 30
)

// unpackKernelDeb unpacks the kernel image and module tree of a Debian
// kernel package into <root>/<sha256 of the .deb>/, once; sum is the .deb's
// SHA-256 when the caller already has it.
func unpackKernelDeb(debPath, root, sum string) (*kernelInfo, error) {
	if sum == "" {
		var err error
		if sum, err = hashFile(debPath); err != nil {
			return nil, fmt.Errorf("kernel package: %w", err)
		}
	}
	dir := filepath.Join(root, sum)
	if k, err := loadKernelTree(dir); err == nil {
		// The tree's mtime is its last use: cache prune leaves trees used
		// in the last minutes alone, as a build may be reading them.
		now := time.Now()
		_ = os.Chtimes(dir, now, now)
		return k, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	tmp, err := os.MkdirTemp(root, ".tmp-")
	if err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp) // no-op once renamed
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Open(debPath)
	if err != nil {
		return nil, fmt.Errorf("kernel package: %w", err)
	}
	defer f.Close()
	if err := extractKernelDeb(f, tmp); err != nil {
		return nil, fmt.Errorf("unpack %s: %w", debPath, err)
	}
	if _, err := loadKernelTree(tmp); err != nil {
		return nil, fmt.Errorf("unpack %s: %w", debPath, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// A concurrent unpack of the same package won the race.
		if k, lerr := loadKernelTree(dir); lerr == nil {
			return k, nil
		}
		return nil, fmt.Errorf("publish unpacked kernel: %w", err)
	}
	slog.Debug("kernel package unpacked", "deb", debPath, "dir", dir)
	return loadKernelTree(dir)
}

// loadKernelTree finds the single boot/vmlinuz-<rel> and its
// lib/modules/<rel> in an unpacked package.
func loadKernelTree(dir string) (*kernelInfo, error) {
	imgs, err := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if err != nil {
		return nil, err
	}
	if len(imgs) != 1 {
		return nil, fmt.Errorf("want one boot/vmlinuz-* in the package, found %d", len(imgs))
	}
	rel := strings.TrimPrefix(filepath.Base(imgs[0]), "vmlinuz-")
	md := filepath.Join(dir, "lib", "modules", rel)
	if _, err := os.Stat(filepath.Join(md, "modules.dep")); err != nil {
		return nil, fmt.Errorf("kernel %s has no module tree: %w", rel, err)
	}
	return &kernelInfo{Image: imgs[0], Release: rel, ModulesDir: md}, nil
}

// extractKernelDeb writes boot/vmlinuz-<rel> and lib/modules/<rel>/
// (modules.dep, modules.builtin, modules.order, kernel/**.ko*) from a .deb
// into dst. Packages carry no modules.dep (depmod makes it at install time),
// so one is generated from each module's .modinfo "depends=".
func extractKernelDeb(r io.Reader, dst string) error {
	ar, err := newArReader(r)
	if err != nil {
		return err
	}
	sawBinary := false
	for {
		h, err := ar.Next()
		if err == io.EOF {
			return errors.New("no data.tar member")
		}
		if err != nil {
			return err
		}
		switch {
		case h.Name == "debian-binary":
			v, err := io.ReadAll(io.LimitReader(ar, 64))
			if err != nil {
				return fmt.Errorf("read debian-binary: %w", err)
			}
			if !strings.HasPrefix(string(v), "2.") {
				return fmt.Errorf("unsupported .deb format %q", strings.TrimSpace(string(v)))
			}
			sawBinary = true
		case strings.HasPrefix(h.Name, "data.tar"):
			if !sawBinary {
				return errors.New("not a Debian package (no debian-binary before data.tar)")
			}
			dr, closeFn, err := decompressByName(h.Name, ar)
			if err != nil {
				return err
			}
			defer closeFn()
			return extractKernelTar(tar.NewReader(dr), dst)
		}
	}
}

// decompressByName opens a data.tar member by its compression suffix.
func decompressByName(name string, r io.Reader) (io.Reader, func(), error) {
	nop := func() {}
	switch path.Ext(name) {
	case ".tar":
		return r, nop, nil
	case ".gz":
		gr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		return gr, nop, nil
	case ".xz":
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		return xr, nop, nil
	case ".zst":
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<30))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		return zr, zr.Close, nil
	case ".bz2":
		return bzip2.NewReader(r), nop, nil
	}
	return nil, nil, fmt.Errorf("%s: unsupported compression", name)
}

// kernelTar collects what extractKernelTar found.
type kernelTar struct {
	dst      string
	release  string            // from boot/vmlinuz-<rel>
	modRel   string            // from lib/modules/<rel>/
	modules  map[string]string // module name -> path relative to the module dir
	depends  map[string][]string
	haveDep  bool
	written  int64
	nKernels int
}

func extractKernelTar(tr *tar.Reader, dst string) error {
	kt := &kernelTar{dst: dst, modules: map[string]string{}, depends: map[string][]string{}}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("data.tar: %w", err)
		}
		name, err := tarMemberPath(h.Name)
		if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			continue // directories are made as needed; links are not needed
		}
		if err := kt.member(name, h, tr); err != nil {
			return err
		}
	}
	return kt.finish()
}

// tarMemberPath normalises "./boot/x" to "boot/x" and refuses names that
// could escape the destination.
func tarMemberPath(n string) (string, error) {
	n = strings.TrimPrefix(n, "./")
	if n == "" || n == "." || n == "./" {
		return ".", nil
	}
	if strings.HasPrefix(n, "/") || strings.ContainsRune(n, 0) || strings.Contains(n, "\\") {
		return "", fmt.Errorf("data.tar: unsafe member name %q", n)
	}
	for _, el := range strings.Split(strings.TrimSuffix(n, "/"), "/") {
		if el == ".." {
			return "", fmt.Errorf("data.tar: member name %q escapes the package root", n)
		}
	}
	return path.Clean(n), nil
}

func (kt *kernelTar) member(name string, h *tar.Header, r io.Reader) error {
	if rel, ok := strings.CutPrefix(name, "boot/vmlinuz-"); ok {
		if !validRelease(rel) {
			return fmt.Errorf("data.tar: bad kernel release in %q", name)
		}
		if h.Size > maxKernelImage {
			return fmt.Errorf("data.tar: %s is %d bytes, more than %d", name, h.Size, maxKernelImage)
		}
		kt.nKernels++
		kt.release = rel
		return kt.write(name, h.Size, r)
	}
	// Debian moved module trees to /usr/lib/modules with merged /usr.
	rest, ok := strings.CutPrefix(name, "lib/modules/")
	if !ok {
		if rest, ok = strings.CutPrefix(name, "usr/lib/modules/"); !ok {
			return nil
		}
	}
	rel, file, ok := strings.Cut(rest, "/")
	if !ok || !validRelease(rel) {
		return nil
	}
	if kt.modRel != "" && kt.modRel != rel {
		return fmt.Errorf("data.tar: module trees for two releases (%s, %s)", kt.modRel, rel)
	}
	out := path.Join("lib/modules", rel, file)
	switch {
	case file == "modules.dep" || file == "modules.builtin" || file == "modules.order":
		if h.Size > maxRecipeSize*16 {
			return fmt.Errorf("data.tar: %s is too large (%d bytes)", name, h.Size)
		}
		kt.modRel = rel
		kt.haveDep = kt.haveDep || file == "modules.dep"
		return kt.write(out, h.Size, r)
	case strings.HasPrefix(file, "kernel/") && strings.Contains(path.Base(file), ".ko"):
		if h.Size > maxModuleSize {
			return fmt.Errorf("data.tar: module %s is %d bytes, more than %d", name, h.Size, maxModuleSize)
		}
		kt.modRel = rel
		raw, err := io.ReadAll(io.LimitReader(r, h.Size))
		if err != nil {
			return fmt.Errorf("data.tar: read %s: %w", name, err)
		}
		mod := moduleName(file)
		if prev, dup := kt.modules[mod]; dup {
			return fmt.Errorf("data.tar: module %s twice (%s, %s)", mod, prev, file)
		}
		kt.modules[mod] = file
		if deps, err := moduleDepends(file, raw); err != nil {
			slog.Debug("module without readable .modinfo", "module", file, "err", err)
		} else {
			kt.depends[mod] = deps
		}
		return kt.write(out, int64(len(raw)), bytes.NewReader(raw))
	}
	return nil
}

func validRelease(rel string) bool {
	return rel != "" && rel != "." && rel != ".." && !strings.ContainsAny(rel, "/\x00")
}

// write copies n bytes to dst/name; O_EXCL turns a repeated member into an
// error instead of a silent overwrite.
func (kt *kernelTar) write(name string, n int64, r io.Reader) error {
	kt.written += n
	if kt.written > maxKernelUnpack {
		return fmt.Errorf("data.tar: more than %d bytes to unpack", int64(maxKernelUnpack))
	}
	p := filepath.Join(kt.dst, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow, 0o644)
	if err != nil {
		return fmt.Errorf("data.tar: %w", err)
	}
	if _, err := io.CopyN(f, r, n); err != nil {
		f.Close()
		return fmt.Errorf("data.tar: write %s: %w", name, noEOF(err))
	}
	return f.Close()
}

func (kt *kernelTar) finish() error {
	switch {
	case kt.nKernels == 0:
		return errors.New("no boot/vmlinuz-* in the package (is it a linux-image package?)")
	case kt.nKernels > 1:
		return fmt.Errorf("%d kernel images in one package", kt.nKernels)
	case kt.modRel == "":
		return fmt.Errorf("kernel %s: the package has no lib/modules/%s", kt.release, kt.release)
	case kt.modRel != kt.release:
		return fmt.Errorf("kernel %s ships modules for %s", kt.release, kt.modRel)
	}
	if kt.haveDep {
		return nil
	}
	return kt.writeModulesDep()
}

// writeModulesDep writes modules.dep in depmod's format from .modinfo
// depends= (direct dependencies; resolveModules follows them recursively).
func (kt *kernelTar) writeModulesDep() error {
	names := make([]string, 0, len(kt.modules))
	for n := range kt.modules {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	b.WriteString("# generated by mvm from each module's .modinfo depends=\n")
	for _, n := range names {
		b.WriteString(kt.modules[n] + ":")
		for _, d := range kt.depends[n] {
			p, ok := kt.modules[d]
			if !ok {
				return fmt.Errorf("module %s depends on %s, which the package lacks", n, d)
			}
			b.WriteString(" " + p)
		}
		b.WriteByte('\n')
	}
	return kt.write(path.Join("lib/modules", kt.release, "modules.dep"), int64(b.Len()), &b)
}

// moduleDepends reads the depends= entry of a module's .modinfo section.
func moduleDepends(name string, raw []byte) ([]string, error) {
	obj, err := decodeModule(name, raw)
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	var deps []string
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			for _, d := range strings.Split(string(v), ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps = append(deps, moduleName(d))
				}
			}
		}
	}
	sort.Strings(deps)
	return deps, nil
}

// debianKernel picks the kernel for kernel.source = "debian": the recipe's
// .deb, its pinned package, else the newest installed cloud kernel, else the
// cloud kernel package apt offers. deb is the package file used, if any.
func debianKernel(ctx context.Context, r *Recipe, cacheDir, goarch, debarch string, progress func(string)) (k *kernelInfo, deb string, err error) {
	switch {
	case r.Kernel.Deb != "":
		p, err := filepath.Abs(r.srcPath(r.Kernel.Deb))
		if err != nil {
			return nil, "", err
		}
		progress("unpack kernel")
		k, err := unpackKernelDeb(p, filepath.Join(cacheDir, kernelsDir), "")
		return k, p, err
	case r.Kernel.Package != "":
		return aptKernel(ctx, cacheDir, r.Kernel.Package, debarch, progress)
	}
	k, err = kernelFor(goarch)
	if err == nil {
		return k, "", nil
	}
	if _, lerr := exec.LookPath("apt-get"); lerr != nil {
		return nil, "", err
	}
	slog.Info("no installed kernel; fetching the cloud kernel package", "arch", debarch, "reason", err)
	k, deb, ferr := aptKernel(ctx, cacheDir, "linux-image-cloud-"+debarch, debarch, progress)
	if ferr != nil {
		return nil, "", fmt.Errorf("%w; fetching one failed too: %w", err, ferr)
	}
	return k, deb, nil
}
