package image

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
)

// The bundled catalog is a set of recipe files; adding an image means adding
// a file here.
//
//go:embed recipes/*.toml
var catalogFS embed.FS

// guestModules are what a microVM needs to reach its disks, console, agent
// channel, network and entropy over virtio-mmio.
var guestModules = []string{
	"virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "virtio_console",
	"failover", "net_failover", "virtio_net",
	"vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport",
	"virtio_rng",
}

// requiredModules must exist as modules or be built into the kernel.
var requiredModules = []string{"virtio_mmio", "virtio_blk", "virtio_console"}

var loadCatalog = sync.OnceValues(func() (map[string]*Recipe, error) {
	return parseCatalog(catalogFS)
})

// parseCatalog reads every recipes/*.toml; a recipe's name must match its
// file name so the catalog cannot hold two images of one name.
func parseCatalog(fsys fs.FS) (map[string]*Recipe, error) {
	files, err := fs.Glob(fsys, "recipes/*.toml")
	if err != nil {
		return nil, err
	}
	out := map[string]*Recipe{}
	for _, f := range files {
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, fmt.Errorf("catalog: %w", err)
		}
		r, err := ParseRecipe("catalog:"+f, b, "")
		if err != nil {
			return nil, fmt.Errorf("catalog: %w", err)
		}
		if want := strings.TrimSuffix(path.Base(f), ".toml"); r.Name != want {
			return nil, fmt.Errorf("catalog: %s names image %q; want %q", f, r.Name, want)
		}
		out[r.Name] = r
	}
	return out, nil
}

func mustCatalog() map[string]*Recipe {
	c, err := loadCatalog()
	if err != nil {
		panic(err) // embedded at build time; TestCatalogParses keeps it valid
	}
	return c
}

// Known lists the catalog's image names, sorted.
func Known() []string {
	c := mustCatalog()
	names := make([]string, 0, len(c))
	for n := range c {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Catalog returns the bundled recipes sorted by name. Callers must not
// modify them.
func Catalog() []*Recipe {
	c := mustCatalog()
	out := make([]*Recipe, 0, len(c))
	for _, n := range Known() {
		out = append(out, c[n])
	}
	return out
}

// Lookup returns the catalog recipe called name.
func Lookup(name string) (*Recipe, error) {
	r, ok := mustCatalog()[name]
	if !ok {
		return nil, fmt.Errorf("unknown image %q (known: %s)", name, strings.Join(Known(), ", "))
	}
	return r, nil
}

// Search returns catalog recipes whose name, tags or description contain
// term (case-insensitive), best matches first: name, then tag, then
// description, each group sorted by name.
func Search(term string) []*Recipe {
	term = strings.ToLower(strings.TrimSpace(term))
	var groups [3][]*Recipe
	for _, r := range Catalog() {
		switch {
		case strings.Contains(r.Name, term):
			groups[0] = append(groups[0], r)
		case matchesTag(r.Tags, term):
			groups[1] = append(groups[1], r)
		case strings.Contains(strings.ToLower(r.Description), term):
			groups[2] = append(groups[2], r)
		}
	}
	return append(append(groups[0], groups[1]...), groups[2]...)
}

func matchesTag(tags []string, term string) bool {
	for _, t := range tags {
		if strings.Contains(t, term) {
			return true
		}
	}
	return false
}

// Resolve turns a reference into a recipe: "flake:REF" is a Nix flake
// (ResolveFlake), a path to a recipe file when it names one (contains a
// slash or ends in .toml), else a catalog name.
func Resolve(ref string) (*Recipe, error) {
	if f, ok := strings.CutPrefix(ref, "flake:"); ok {
		return ResolveFlake(f)
	}
	if strings.ContainsRune(ref, '/') || strings.HasSuffix(ref, ".toml") {
		return LoadRecipe(ref)
	}
	return Lookup(ref)
}
