package template

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mvm-dev/mvm/internal/tomlx"
)

// SpecFile is the file `template init` writes and `template create --from
// DIR` reads: a template's image and defaults, kept in a project's tree.
const SpecFile = "mvm-template.toml"

// Spec is SpecFile.
type Spec struct {
	Name        string   `toml:"name"`
	Description string   `toml:"description,omitempty"`
	Image       string   `toml:"image"` // catalog name, or recipe path relative to the file
	Defaults    Defaults `toml:"defaults"`
}

// LoadSpec reads DIR/mvm-template.toml (strictly: unknown keys are errors)
// and resolves a relative recipe path against DIR.
func LoadSpec(dir string) (*Spec, error) {
	path := filepath.Join(dir, SpecFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read template spec: %w (create one with 'mvmctl template init %s')", err, dir)
	}
	var s Spec
	if err := tomlx.Decode(path, b, &s, "keys: name, description, image, [defaults] backend, cpus, memory_mib, network, egress, secrets, publish"); err != nil {
		return nil, err
	}
	if s.Image == "" {
		return nil, fmt.Errorf("%s: image is not set (a catalog name such as \"minimal\" or a recipe file)", path)
	}
	if filepath.Ext(s.Image) == ".toml" && !filepath.IsAbs(s.Image) {
		s.Image = filepath.Join(dir, s.Image)
	}
	return &s, nil
}

// scaffoldRecipe is the recipe `template init` starts a project with.
const scaffoldRecipe = `# An image recipe: what the template's VMs boot. Build it on its own with
# 'mvmctl build recipe.toml'; 'mvmctl image list' shows the catalog.
name = %q
description = "Image of the %s template"

[rootfs]
source = "minimal"

[access]
console = true

[resources]
cpus = 1
memory_mib = 256
`

const scaffoldSpec = `# A template: an image plus the defaults 'mvmctl up --template NAME' uses
# where no flag says otherwise. Record it with
#   mvmctl template create %s --from .
# and build its image (and a snapshot to restore from) with
#   mvmctl template build %s --snapshot
name = %q
description = ""
image = "recipe.toml"

[defaults]
cpus = 1
memory_mib = 256
# network = "default"      # a network name, "none" or "user"
# egress = "registries"    # policy the network is created with when missing
# secrets = ["api_token"]  # up refuses without --secret api_token=...
# publish = ["8080:80"]
`

// Init writes a starter recipe.toml and mvm-template.toml into dir
// (created if missing). Existing files are never overwritten.
func Init(dir, name string) ([]string, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	files := []struct{ name, body string }{
		{"recipe.toml", fmt.Sprintf(scaffoldRecipe, name, name)},
		{SpecFile, fmt.Sprintf(scaffoldSpec, name, name, name)},
	}
	for _, f := range files {
		if _, err := os.Lstat(filepath.Join(dir, f.name)); err == nil {
			return nil, fmt.Errorf("%s already exists; nothing was written", filepath.Join(dir, f.name))
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	var wrote []string
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return wrote, err
		}
		_, werr := fh.WriteString(f.body)
		if cerr := fh.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return wrote, werr
		}
		wrote = append(wrote, p)
	}
	return wrote, nil
}
