package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/store"
	"github.com/mvm-dev/mvm/internal/template"
	"github.com/mvm-dev/mvm/internal/tomlx"
	"github.com/mvm-dev/mvm/internal/vm"
)

// newTemplateCommand groups the template verbs.
func newTemplateCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "template",
		Aliases: []string{"tpl"},
		Short:   "Named images with defaults and snapshots: create, build, share and boot them ('up --template')",
		Long: `A template is an image (catalog name or recipe) plus the defaults 'up
--template NAME' applies where no flag says otherwise (cpus, memory,
network, egress, expected secrets, published ports), and optionally a
snapshot: then 'up --template' restores a clone in about a second instead
of booting. Templates move between hosts through OCI registries and S3
('template push', 'template pull'), signed and verified.`,
		Args: exactArgs(0, "a subcommand"),
	}
	cmd.AddCommand(newTemplateInitCommand(g), newTemplateCreateCommand(g), newTemplateBuildCommand(g),
		newTemplateListCommand(g), newTemplateInfoCommand(g), newTemplateEditCommand(g), newTemplateDeleteCommand(g))
	cmd.AddCommand(templateTransferCommands(g)...)
	return cmd
}

func completeTemplateNames(g *globals) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		m, err := g.manager()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ts, _ := m.Templates().List()
		var out []string
		for _, t := range ts {
			out = append(out, t.Name)
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// defaultsFlags are the template defaults as flags (create, edit).
type defaultsFlags struct {
	d                    template.Defaults
	memory, description  string
	clearSecrets, clearP bool
}

func (f *defaultsFlags) register(cmd *cobra.Command, edit bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.description, "description", "", "one line saying what the template is for")
	fl.StringVar(&f.d.Backend, "backend", "", "backend its VMs use (default: chosen by up)")
	fl.IntVar(&f.d.CPUs, "cpus", 0, "vCPUs")
	fl.StringVar(&f.memory, "memory", "", "memory size, e.g. 512M or 1G")
	fl.StringVar(&f.d.Network, "network", "", "network its VMs join ('none', 'user' or a network name)")
	fl.StringVar(&f.d.Egress, "egress", "", "egress preset the network is created with when missing (none, registries, dev, open)")
	fl.StringArrayVar(&f.d.Secrets, "expect-secret", nil, "a secret its VMs need: up refuses without --secret NAME=... (repeatable)")
	fl.StringArrayVarP(&f.d.Publish, "publish", "p", nil, "a port to publish: [IP:]HOSTPORT:GUESTPORT[/udp] (repeatable)")
	if edit {
		fl.BoolVar(&f.clearSecrets, "clear-secrets", false, "forget the expected secrets")
		fl.BoolVar(&f.clearP, "clear-publish", false, "forget the published ports")
	}
}

func (f *defaultsFlags) parse() error {
	if f.memory != "" {
		mib, err := vm.ParseSize(f.memory)
		if err != nil {
			return usageError{fmt.Errorf("--memory: %w", err)}
		}
		f.d.MemoryMiB = mib
	}
	if f.d.CPUs < 0 || f.d.CPUs > 255 {
		return usageError{fmt.Errorf("--cpus %d: must be between 1 and 255", f.d.CPUs)}
	}
	return nil
}

func newTemplateInitCommand(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "init DIR [--name NAME]",
		Short: "Write a starter recipe and template spec into DIR",
		Example: `  mvmctl template init ./web && mvmctl template create web --from ./web
  mvmctl template build web --snapshot && mvmctl up --template web`,
		Args: exactArgs(1, "a directory"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" {
				abs, _ := filepath.Abs(args[0])
				name = strings.ToLower(filepath.Base(abs))
			}
			files, err := template.Init(args[0], name)
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, files)
			}
			for _, f := range files {
				fmt.Fprintln(g.stdout, f)
			}
			fmt.Fprintf(g.stderr, "Edit them, then: mvmctl template create %s --from %s\n", name, args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "template name (default: the directory's name)")
	return cmd
}

func newTemplateCreateCommand(g *globals) *cobra.Command {
	var f defaultsFlags
	var from string
	cmd := &cobra.Command{
		Use:   "create NAME --from IMAGE|RECIPE|DIR [defaults...]",
		Short: "Record a template: an image and the defaults up --template applies",
		Long: `Record a template. --from is a catalog image, a recipe file, or a directory
holding mvm-template.toml ('template init'), whose defaults the flags
override. Nothing is built yet: 'template build NAME [--snapshot]' does that.`,
		Example: `  mvmctl template create web --from http --cpus 2 --memory 512M -p 8080:80
  mvmctl template create api --from ./api --expect-secret api_token --network lab --egress registries`,
		Args: exactArgs(1, "the template's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.parse(); err != nil {
				return err
			}
			o := vm.TemplateCreateOptions{Name: args[0], Image: from, Description: f.description, Defaults: f.d}
			if fi, err := os.Stat(from); err == nil && fi.IsDir() {
				spec, err := template.LoadSpec(from)
				if err != nil {
					return err
				}
				o.Image = spec.Image
				if o.Description == "" {
					o.Description = spec.Description
				}
				o.Defaults = mergeDefaults(spec.Defaults, f.d, cmd)
			}
			m, err := g.manager()
			if err != nil {
				return err
			}
			t, err := m.TemplateCreate(cmd.Context(), o)
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, templateView(m, t))
			}
			fmt.Fprintln(g.stdout, t.Name)
			fmt.Fprintf(g.stderr, "Template %s boots %s. Build it (and a snapshot to restore from) with: mvmctl template build %s --snapshot\n", t.Name, t.Image, t.Name)
			return nil
		},
	}
	f.register(cmd, false)
	cmd.Flags().StringVar(&from, "from", "", "catalog image, recipe file or template directory (default: the default image)")
	return cmd
}

// mergeDefaults lays the flags the user set over base.
func mergeDefaults(base, flags template.Defaults, cmd *cobra.Command) template.Defaults {
	ch := cmd.Flags().Changed
	if ch("backend") {
		base.Backend = flags.Backend
	}
	if ch("cpus") {
		base.CPUs = flags.CPUs
	}
	if ch("memory") {
		base.MemoryMiB = flags.MemoryMiB
	}
	if ch("network") {
		base.Network = flags.Network
	}
	if ch("egress") {
		base.Egress = flags.Egress
	}
	if ch("expect-secret") {
		base.Secrets = flags.Secrets
	}
	if ch("publish") {
		base.Publish = flags.Publish
	}
	return base
}

func newTemplateBuildCommand(g *globals) *cobra.Command {
	var o vm.TemplateBuildOptions
	cmd := &cobra.Command{
		Use:   "build NAME [--snapshot]",
		Short: "Build a template's image into it; with --snapshot also boot, wait until healthy and save a snapshot",
		Long: `Build a template's image and keep a copy inside the template, so a cache
prune never breaks it. With --snapshot, boot a VM of it (QEMU unless the
template names a backend), wait until its health checks pass, save it as
the template's snapshot and remove the VM: 'up --template NAME' then
restores clones of it, each with its own name, address and keys.`,
		Example:           `  mvmctl template build web --snapshot`,
		Args:              exactArgs(1, "the template's name"),
		ValidArgsFunction: completeTemplateNames(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			pp := newProgress(g)
			o.Progress = pp.event
			t, err := m.TemplateBuild(cmd.Context(), args[0], o)
			pp.done()
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, struct {
					Type     string `json:"type"`
					Template any    `json:"template"`
				}{"result", templateView(m, t)})
			}
			fmt.Fprintln(g.stdout, t.Name)
			what := "image"
			if t.Snapshot != nil {
				what = "image and snapshot"
			}
			fmt.Fprintf(g.stderr, "Template %s built (%s). Try: mvmctl up --template %s\n", t.Name, what, t.Name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.Snapshot, "snapshot", false, "also boot it and save a snapshot that up --template restores")
	cmd.Flags().DurationVar(&o.BootTimeout, "timeout", 0, "how long to wait for the build VM to become healthy (default 3m)")
	return cmd
}

// templateItem is a template as listings show it.
type templateItem struct {
	*template.Template
	Dir       string   `json:"dir"`
	Built     bool     `json:"built"`
	SizeBytes int64    `json:"size_bytes"`
	UsedBy    []string `json:"used_by,omitempty"`
}

func templateView(m *vm.Manager, t *template.Template) templateItem {
	_, alloc := vm.DirSize(t.Dir)
	return templateItem{Template: t, Dir: t.Dir, Built: t.HasImage(), SizeBytes: alloc, UsedBy: m.TemplateUsers(t.Name)}
}

func newTemplateListCommand(g *globals) *cobra.Command {
	var f listFormat
	return withFormat(g, &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List templates",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			ts, errs := m.Templates().List()
			for _, e := range errs {
				fmt.Fprintln(g.stderr, "mvmctl: skipping unreadable template:", e)
			}
			items := []templateItem{}
			for _, t := range ts {
				items = append(items, templateView(m, t))
			}
			if g.json {
				return writeJSON(g.stdout, items)
			}
			if f.set() {
				return f.write(g.stdout, items)
			}
			if len(items) == 0 {
				fmt.Fprintln(g.stderr, "No templates. Make one with 'mvmctl template create NAME --from IMAGE' or fetch one with 'mvmctl template pull REF'.")
				return nil
			}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "NAME\tIMAGE\tSNAPSHOT\tCPUS\tMEMORY\tNETWORK\tSIZE\tSOURCE\tUPDATED")
			for _, it := range items {
				snap := "-"
				if it.Snapshot != nil {
					snap = it.Snapshot.Backend
				} else if !it.Built {
					snap = "(not built)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", it.Name, shortImage(it.Image), snap,
					orDash(it.Defaults.CPUs, ""), orDash(it.Defaults.MemoryMiB, "MiB"), dashIfEmpty(it.Defaults.Network),
					humanBytes(it.SizeBytes), dashIfEmpty(it.Source), age(it.Updated))
			}
			return tw.Flush()
		},
	}, &f, templateItem{})
}

func shortImage(s string) string {
	if strings.ContainsRune(s, os.PathSeparator) {
		return filepath.Base(s)
	}
	return s
}

func orDash(n int, unit string) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%d%s", n, unit)
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newTemplateInfoCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:               "info NAME",
		Aliases:           []string{"inspect", "show"},
		Short:             "Show a template: image, defaults, snapshot, source and signature",
		Args:              exactArgs(1, "the template's name"),
		ValidArgsFunction: completeTemplateNames(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			t, err := m.Templates().Get(args[0])
			if err != nil {
				return err
			}
			it := templateView(m, t)
			if g.json {
				return writeJSON(g.stdout, it)
			}
			w := g.stdout
			fmt.Fprintf(w, "Name:         %s\n", t.Name)
			if t.Description != "" {
				fmt.Fprintf(w, "Description:  %s\n", t.Description)
			}
			fmt.Fprintf(w, "Image:        %s\n", t.Image)
			if t.ImageDigest != "" {
				fmt.Fprintf(w, "Image digest: %s\n", t.ImageDigest)
			}
			fmt.Fprintf(w, "Built:        %v\n", it.Built)
			d := t.Defaults
			fmt.Fprintf(w, "Defaults:     backend=%s cpus=%s memory=%s network=%s egress=%s\n", dashIfEmpty(d.Backend),
				orDash(d.CPUs, ""), orDash(d.MemoryMiB, "MiB"), dashIfEmpty(d.Network), dashIfEmpty(d.Egress))
			if len(d.Secrets) > 0 {
				fmt.Fprintf(w, "Secrets:      %s (give each to up with --secret NAME=@FILE)\n", strings.Join(d.Secrets, ", "))
			}
			if len(d.Publish) > 0 {
				fmt.Fprintf(w, "Publish:      %s\n", strings.Join(d.Publish, ", "))
			}
			if s := t.Snapshot; s != nil {
				fmt.Fprintf(w, "Snapshot:     %s, %d vCPU, %d MiB, network %s, saved %s\n", s.Backend, s.CPUs, s.MemoryMiB, dashIfEmpty(s.Network), age(s.Created))
			} else {
				fmt.Fprintln(w, "Snapshot:     none (up --template boots the image)")
			}
			if t.Source != "" {
				fmt.Fprintf(w, "Source:       %s\n", t.Source)
			}
			if t.Digest != "" {
				fmt.Fprintf(w, "Digest:       %s\n", t.Digest)
			}
			if t.SignedBy != "" {
				fmt.Fprintf(w, "Signed by:    %s\n", t.SignedBy)
			}
			fmt.Fprintf(w, "Size:         %s\n", humanBytes(it.SizeBytes))
			fmt.Fprintf(w, "Directory:    %s\n", t.Dir)
			if len(it.UsedBy) > 0 {
				fmt.Fprintf(w, "Used by:      %s\n", strings.Join(it.UsedBy, ", "))
			}
			return nil
		},
	}
}

// editable is what `template edit` opens in $EDITOR.
type editable struct {
	Description string            `toml:"description"`
	Defaults    template.Defaults `toml:"defaults"`
}

func newTemplateEditCommand(g *globals) *cobra.Command {
	var f defaultsFlags
	cmd := &cobra.Command{
		Use:   "edit NAME [defaults...]",
		Short: "Change a template's description and defaults (flags, or $EDITOR without flags)",
		Example: `  mvmctl template edit web --cpus 4 --publish 8080:80
  EDITOR=vi mvmctl template edit web`,
		Args:              exactArgs(1, "the template's name"),
		ValidArgsFunction: completeTemplateNames(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.parse(); err != nil {
				return err
			}
			m, err := g.manager()
			if err != nil {
				return err
			}
			anyFlag := cmd.Flags().NFlag() > 0
			t, err := m.TemplateEdit(cmd.Context(), args[0], func(t *template.Template) error {
				if anyFlag {
					if cmd.Flags().Changed("description") {
						t.Description = f.description
					}
					t.Defaults = mergeDefaults(t.Defaults, f.d, cmd)
					if f.clearSecrets {
						t.Defaults.Secrets = nil
					}
					if f.clearP {
						t.Defaults.Publish = nil
					}
					return nil
				}
				return editInEditor(g, t)
			})
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, templateView(m, t))
			}
			fmt.Fprintln(g.stdout, t.Name)
			return nil
		},
	}
	f.register(cmd, true)
	return cmd
}

// editInEditor opens the template's editable part in $VISUAL/$EDITOR and
// takes it back strictly; an invalid edit changes nothing.
func editInEditor(g *globals, t *template.Template) error {
	editor := os.Getenv("VISUAL")
	if editor == "" {
		editor = os.Getenv("EDITOR")
	}
	if editor == "" {
		return usageError{errors.New("no $EDITOR set: set it, or change defaults with flags (mvmctl template edit NAME --cpus 2)")}
	}
	b, err := toml.Marshal(editable{Description: t.Description, Defaults: t.Defaults})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp("", "mvm-template-"+t.Name+"-*.toml")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	head := "# Template " + t.Name + ": edit, save and quit. Keys: description, [defaults] backend, cpus, memory_mib,\n# network, egress, secrets, publish.\n"
	if _, err := tmp.WriteString(head + string(b)); err != nil {
		tmp.Close()
		return err
	}
	tmp.Close()
	parts := strings.Fields(editor)
	c := exec.Command(parts[0], append(parts[1:], tmp.Name())...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, g.stdout, g.stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("editor %s: %w; nothing changed", editor, err)
	}
	nb, err := os.ReadFile(tmp.Name())
	if err != nil {
		return err
	}
	var e editable
	if err := tomlx.Decode(tmp.Name(), bytes.TrimSpace(nb), &e, "keys: description, [defaults] backend, cpus, memory_mib, network, egress, secrets, publish"); err != nil {
		return fmt.Errorf("%w; nothing changed", err)
	}
	t.Description, t.Defaults = e.Description, e.Defaults
	return nil
}

func newTemplateDeleteCommand(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:               "delete NAME...",
		Aliases:           []string{"rm", "remove"},
		Short:             "Delete templates (refused while VMs made from them exist, unless -f)",
		Args:              minArgs(1, "template name"),
		ValidArgsFunction: completeTemplateNames(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			return forEachName(g, args, func(name string) (*store.Record, error) {
				return nil, m.TemplateDelete(cmd.Context(), name, force)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "delete even if VMs made from it exist (they cannot start again)")
	return cmd
}
