package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/image"
	"github.com/mvm-dev/mvm/internal/vm"
)

// imageItem is the `image list --json` shape.
type imageItem struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Tags        []string `json:"tags"`
	Rootfs      string   `json:"rootfs"`
	Cached      string   `json:"cached_digest,omitempty"`
}

func newImageCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "List, search, inspect and fetch images from the catalog",
	}
	cmd.AddCommand(newImageListCommand(g), newImageSearchCommand(g), newImageInfoCommand(g), newImageFetchCommand(g))
	return cmd
}

func newImageListCommand(g *globals) *cobra.Command {
	var f listFormat
	return withFormat(g, &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the bundled images",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return printImages(g, &f, image.Catalog())
		},
	}, &f, imageItem{})
}

func newImageSearchCommand(g *globals) *cobra.Command {
	var f listFormat
	return withFormat(g, &cobra.Command{
		Use:   "search TERM",
		Short: "Find images by name, tag or description",
		Args:  exactArgs(1, "one search term"),
		RunE: func(cmd *cobra.Command, args []string) error {
			found := image.Search(args[0])
			if len(found) == 0 && !g.json {
				fmt.Fprintf(g.stderr, "No image matches %q. See 'mvmctl image list'.\n", args[0])
				return nil
			}
			return printImages(g, &f, found)
		},
	}, &f, imageItem{})
}

func printImages(g *globals, f *listFormat, rs []*image.Recipe) error {
	cacheDir := ""
	if _, err := g.manager(); err == nil {
		cacheDir = g.dirs.ImagesDir()
	}
	items := []imageItem{}
	for _, r := range rs {
		it := imageItem{Name: r.Name, Description: r.Description, Tags: r.Tags, Rootfs: r.Rootfs.Source}
		if r.Rootfs.Source == image.RootfsDebian {
			it.Rootfs += ":" + r.Rootfs.Suite
		}
		if cacheDir != "" {
			if a, err := image.CachedByName(cacheDir, r.Name); err == nil {
				it.Cached = a.Digest
			}
		}
		items = append(items, it)
	}
	if g.json {
		return writeJSON(g.stdout, items)
	}
	if f.set() {
		return f.write(g.stdout, items)
	}
	tw := newTable(g.stdout)
	fmt.Fprintln(tw, "NAME\tROOTFS\tCACHED\tTAGS\tDESCRIPTION")
	for _, it := range items {
		cached := "-"
		if it.Cached != "" {
			cached = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", it.Name, it.Rootfs, cached, strings.Join(it.Tags, ","), it.Description)
	}
	return tw.Flush()
}

func newImageInfoCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "info NAME|RECIPE.toml",
		Short: "Show an image's recipe and its cached artifacts",
		Args:  exactArgs(1, "one image name or recipe file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := image.Resolve(args[0])
			if err != nil {
				return usageError{err}
			}
			var cached *image.Artifacts
			if _, err := g.manager(); err == nil {
				cached, _ = image.CachedByName(g.dirs.ImagesDir(), r.Name)
			}
			if g.json {
				return writeJSON(g.stdout, struct {
					Recipe *image.Recipe    `json:"recipe"`
					Cached *image.Artifacts `json:"cached,omitempty"`
				}{r, cached})
			}
			tw := newTable(g.stdout)
			fmt.Fprintf(tw, "Name:\t%s\n", r.Name)
			fmt.Fprintf(tw, "Description:\t%s\n", r.Description)
			fmt.Fprintf(tw, "Tags:\t%s\n", strings.Join(r.Tags, ", "))
			fmt.Fprintf(tw, "Kernel:\t%s\n", strings.TrimSpace(r.Kernel.Source+" "+r.Kernel.Path))
			rootfs := r.Rootfs.Source
			switch r.Rootfs.Source {
			case image.RootfsDebian:
				rootfs += fmt.Sprintf(" %s, packages: %s", r.Rootfs.Suite, strings.Join(r.Rootfs.Packages, " "))
			case image.RootfsOCI:
				rootfs += " " + r.Rootfs.Image
			case image.RootfsNix:
				rootfs += " " + r.Rootfs.Flake
			}
			fmt.Fprintf(tw, "Rootfs:\t%s\n", rootfs)
			for _, s := range r.Services {
				fmt.Fprintf(tw, "Service:\t%s (as %s): %s\n", s.Name, s.User, strings.Join(s.Command, " "))
			}
			for _, h := range r.Health {
				fmt.Fprintf(tw, "Health check:\t%s every %s: %s\n", h.Name, mustText(h.Interval), strings.Join(h.Command, " "))
			}
			fmt.Fprintf(tw, "Console:\t%t\n", r.Access.Console)
			fmt.Fprintf(tw, "Resources:\t%d vCPU, %d MiB\n", r.Resources.CPUs, r.Resources.MemoryMiB)
			if cached != nil {
				fmt.Fprintf(tw, "Cached:\t%s\n", cached.Digest)
				fmt.Fprintf(tw, "Rootfs image:\t%s\n", cached.Rootfs)
			} else {
				fmt.Fprintf(tw, "Cached:\tno (build with 'mvmctl image fetch %s')\n", args[0])
			}
			return tw.Flush()
		},
	}
}

func mustText(d image.Duration) string {
	b, _ := d.MarshalText()
	return string(b)
}

func newImageFetchCommand(g *globals) *cobra.Command {
	var arch string
	cmd := &cobra.Command{
		Use:   "fetch NAME|RECIPE.toml",
		Short: "Build an image into the cache (no-op when cached)",
		Args:  exactArgs(1, "one image name or recipe file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := image.Resolve(args[0])
			if err != nil {
				return usageError{err}
			}
			return ensureImage(cmd, g, r, arch)
		},
	}
	addArchFlag(cmd, &arch)
	return cmd
}

// addArchFlag adds --arch, the guest architecture of an image or VM.
func addArchFlag(cmd *cobra.Command, arch *string) {
	cmd.Flags().StringVar(arch, "arch", "", "guest architecture: amd64 or arm64 (default: the host's; another one is emulated, see docs/foreign-arch.md)")
}

// ensureImage builds r and prints the result; shared by image fetch and
// build. Progress is rendered like up's: a status line on a TTY, JSON lines
// ({"type":"progress"}, then {"type":"result","image":...}) with --json,
// nothing otherwise.
func ensureImage(cmd *cobra.Command, g *globals, r *image.Recipe, arch string) error {
	if _, err := g.manager(); err != nil {
		return err
	}
	arch, err := image.GuestArch(arch)
	if err != nil {
		return usageError{err}
	}
	agent, err := vm.FindAgentFor(arch)
	if err != nil {
		return err
	}
	pp := newProgress(g)
	start := time.Now()
	a, err := image.EnsureRecipe(cmd.Context(), r, image.BuildOptions{
		CacheDir:  g.dirs.ImagesDir(),
		AgentPath: agent,
		Arch:      arch,
		Progress: func(s string) {
			now := time.Now()
			pp.event(vm.Event{Time: now, Stage: "image", Message: r.Name + ": " + image.StageLabel(s), Elapsed: now.Sub(start).Seconds()})
		},
	})
	pp.done()
	if err != nil {
		return err
	}
	if g.json {
		return writeJSON(g.stdout, struct {
			Type  string           `json:"type"`
			Image *image.Artifacts `json:"image"`
		}{"result", a})
	}
	fmt.Fprintf(g.stdout, "%s %s\n", a.Name, a.Digest)
	return nil
}
