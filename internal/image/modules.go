package image

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// maxModuleSize bounds a decompressed module; the largest in-tree modules
// are a few MiB.
const maxModuleSize = 64 << 20

// module is one kernel module to load in the guest.
type module struct {
	Name string // canonical name, underscores: virtio_rng
	Path string // absolute source path, possibly compressed
}

// FileName is the module's name inside the initramfs.
func (m module) FileName() string { return m.Name + ".ko" }

// moduleName turns "kernel/drivers/char/hw_random/virtio-rng.ko.xz" into
// "virtio_rng"; the kernel treats '-' and '_' in module names alike.
func moduleName(p string) string {
	b := filepath.Base(p)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

type depEntry struct {
	path string   // relative to the modules dir
	deps []string // module names
}

// parseModulesDep reads depmod's modules.dep: "path: dep dep ...".
func parseModulesDep(r io.Reader) (map[string]depEntry, error) {
	out := map[string]depEntry{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		path, deps, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("modules.dep line %d: missing ':'", n)
		}
		e := depEntry{path: strings.TrimSpace(path)}
		for _, d := range strings.Fields(deps) {
			e.deps = append(e.deps, moduleName(d))
		}
		out[moduleName(e.path)] = e
	}
	return out, sc.Err()
}

// parseModulesBuiltin reads modules.builtin: one path per built-in module.
func parseModulesBuiltin(r io.Reader) (map[string]bool, error) {
	out := map[string]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			out[moduleName(line)] = true
		}
	}
	return out, sc.Err()
}

// resolveModules returns the modules to load for wanted, dependencies first.
// Built-in modules are skipped; a missing module is an error only when it is
// in required. The order is deterministic: wanted order, with each module's
// dependencies (sorted by name) ahead of it.
func resolveModules(modDir string, wanted, required []string) ([]module, error) {
	depF, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("read module index: %w", err)
	}
	defer depF.Close()
	deps, err := parseModulesDep(depF)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", depF.Name(), err)
	}
	builtin := map[string]bool{}
	if f, err := os.Open(filepath.Join(modDir, "modules.builtin")); err == nil {
		builtin, err = parseModulesBuiltin(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("parse modules.builtin: %w", err)
		}
	} else if !os.IsNotExist(err) {
		return nil, fmt.Errorf("read modules.builtin: %w", err)
	}
	need := map[string]bool{}
	for _, r := range required {
		need[moduleName(r)] = true
	}

	var order []module
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(chain, " -> "), name)
		}
		if builtin[name] {
			state[name] = done
			return nil
		}
		e, ok := deps[name]
		if !ok {
			return fmt.Errorf("module %s (needed by %s) not found in %s", name, strings.Join(chain, " -> "), modDir)
		}
		state[name] = visiting
		sorted := append([]string(nil), e.deps...)
		sort.Strings(sorted)
		for _, d := range sorted {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = done
		order = append(order, module{Name: name, Path: filepath.Join(modDir, e.path)})
		return nil
	}
	for _, w := range wanted {
		name := moduleName(w)
		if _, ok := deps[name]; !ok && !builtin[name] {
			if need[name] {
				return nil, fmt.Errorf("required kernel module %s is neither built in nor in %s", name, modDir)
			}
			slog.Debug("optional kernel module absent, skipping", "module", name, "dir", modDir)
			continue
		}
		if err := visit(name, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// readModule returns a module's ELF bytes, decompressing .ko.xz/.ko.zst/.ko.gz
// so the guest can hand them straight to finit_module.
func readModule(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read module: %w", err)
	}
	return decodeModule(path, raw)
}

// decodeModule decompresses a module file's bytes by its name's suffix and
// checks the result is an ELF object.
func decodeModule(path string, raw []byte) ([]byte, error) {
	var r io.Reader
	switch {
	case strings.HasSuffix(path, ".ko"):
		r = bytes.NewReader(raw)
	case strings.HasSuffix(path, ".ko.xz"):
		xr, err := xz.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", path, err)
		}
		r = xr
	case strings.HasSuffix(path, ".ko.zst"):
		zr, err := zstd.NewReader(bytes.NewReader(raw), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(path, ".ko.gz"):
		gr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", path, err)
		}
		r = gr
	default:
		return nil, fmt.Errorf("module %s: unknown file type", path)
	}
	out, err := io.ReadAll(io.LimitReader(r, maxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("decompress %s: %w", path, err)
	}
	if len(out) > maxModuleSize {
		return nil, fmt.Errorf("module %s: larger than %d bytes decompressed", path, maxModuleSize)
	}
	if !bytes.HasPrefix(out, []byte("\x7fELF")) {
		return nil, fmt.Errorf("module %s: not an ELF object after decompression", path)
	}
	return out, nil
}
