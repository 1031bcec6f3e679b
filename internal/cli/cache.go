package cli

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/image"
)

func newCacheCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Inspect and prune the image cache",
	}
	cmd.AddCommand(newCacheInfoCommand(g), newCachePruneCommand(g))
	return cmd
}

func newCacheInfoCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show cache directories and sizes by kind",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := g.manager(); err != nil {
				return err
			}
			info, err := image.InspectCache(g.dirs.ImagesDir())
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, info)
			}
			fmt.Fprintf(g.stdout, "Image cache: %s (%s)\n", info.Dir, humanBytes(info.TotalBytes))
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "KIND\tCOUNT\tSIZE")
			for _, k := range info.Kinds {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", k.Kind, k.Count, humanBytes(k.Bytes))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(info.Items) > 0 && g.verbose {
				tw = newTable(g.stdout)
				fmt.Fprintln(tw, "\nKIND\tNAME\tSIZE\tPATH")
				for _, it := range info.Items {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", it.Kind, dash(it.Name), humanBytes(it.Bytes), filepath.Base(it.Path))
				}
				return tw.Flush()
			}
			return nil
		},
	}
}

func newCachePruneCommand(g *globals) *cobra.Command {
	var o image.PruneOptions
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove stale temp files, incomplete and unreferenced images",
		Long: `Remove temp files left by crashed builds, incomplete entries and images no
name points at any more. Images used by existing VMs are always kept.
With --all, also remove every other image and the Debian base tarballs.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			recs, err := m.Store.List()
			if err != nil {
				return fmt.Errorf("list VMs to find images in use: %w", err)
			}
			for _, r := range recs {
				if r.ImageDigest != "" {
					o.Keep = append(o.Keep, r.ImageDigest)
				}
			}
			res, err := image.PruneCache(g.dirs.ImagesDir(), o)
			if res != nil {
				if g.json {
					if jerr := writeJSON(g.stdout, res); jerr != nil {
						return jerr
					}
				} else {
					verb := "Removed"
					if o.DryRun {
						verb = "Would remove"
					}
					for _, it := range res.Removed {
						fmt.Fprintf(g.stdout, "%s %s %s (%s)\n", verb, it.Kind, filepath.Base(it.Path), humanBytes(it.Bytes))
					}
					fmt.Fprintf(g.stdout, "%s %d items, %s.\n", verb, len(res.Removed), humanBytes(res.Bytes))
				}
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&o.DryRun, "dry-run", false, "show what would be removed")
	cmd.Flags().BoolVar(&o.All, "all", false, "remove every image and base tarball not used by a VM")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
