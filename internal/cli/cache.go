package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/backend/docker"
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

// kindDockerImage is what `cache info` and `cache prune` call the Docker
// images made by the docker backend (label mvm.managed=1). They live in the
// daemon's storage, not in the cache directory.
const kindDockerImage = "docker-image"

// dockerAPI is the part of the docker backend the cache commands use; a
// variable so tests need no daemon.
var dockerAPI = struct {
	available func(context.Context) error
	list      func(context.Context) ([]docker.ManagedImage, error)
	prune     func(context.Context, func(string) bool) ([]string, error)
}{
	available: (&docker.Backend{}).Available,
	list:      docker.ListImages,
	prune:     docker.PruneImages,
}

// Bounds on the daemon calls: listing is quick, removing layers is not.
const (
	dockerListTimeout  = 10 * time.Second
	dockerPruneTimeout = 2 * time.Minute
)

func newCacheInfoCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show cache directories and sizes by kind",
		Long: `Show the image cache by kind: images, unpacked kernels, kernel packages,
Debian base tarballs, incomplete entries, temp files, stale locks; and the
Docker images made by the docker backend when the daemon is reachable.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := g.manager(); err != nil {
				return err
			}
			info, err := image.InspectCache(g.dirs.ImagesDir())
			if err != nil {
				return err
			}
			addDockerImages(cmd.Context(), info)
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
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", it.Kind, dash(it.Name), humanBytes(it.Bytes), itemPath(it))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			printNotes(g, info.Notes)
			return nil
		},
	}
}

// addDockerImages adds the daemon's mvm-made images as items and a kind,
// or a note when the daemon cannot be asked. They are not part of
// TotalBytes, which is the cache directory's.
func addDockerImages(ctx context.Context, info *image.CacheInfo) {
	imgs, err := listDockerImages(ctx)
	if err != nil {
		info.Notes = append(info.Notes, err.Error())
		return
	}
	total := image.CacheKindTotal{Kind: kindDockerImage}
	for _, im := range imgs {
		info.Items = append(info.Items, dockerItem(im))
		total.Count++
		total.Bytes += im.Bytes
	}
	if total.Count > 0 {
		info.Kinds = append(info.Kinds, total)
	}
}

func listDockerImages(ctx context.Context) ([]docker.ManagedImage, error) {
	ctx, cancel := context.WithTimeout(ctx, dockerListTimeout)
	defer cancel()
	if err := dockerAPI.available(ctx); err != nil {
		return nil, fmt.Errorf("docker images not included: %w", err)
	}
	imgs, err := dockerAPI.list(ctx)
	if err != nil {
		return nil, fmt.Errorf("docker images not included: %w", err)
	}
	return imgs, nil
}

// dockerItem describes an image as a cache item: Path is the image ID, Name
// its first tag.
func dockerItem(im docker.ManagedImage) image.CacheItem {
	it := image.CacheItem{Kind: kindDockerImage, Path: im.ID, Name: im.ID, Digest: im.Digest, Bytes: im.Bytes, MTime: im.Created}
	if len(im.Refs) > 0 {
		it.Name = im.Refs[0]
	}
	return it
}

func itemPath(it image.CacheItem) string {
	if it.Kind == kindDockerImage {
		return it.Path
	}
	return filepath.Base(it.Path)
}

func printNotes(g *globals, notes []string) {
	for _, n := range notes {
		fmt.Fprintf(g.stderr, "note: %s\n", n)
	}
}

func newCachePruneCommand(g *globals) *cobra.Command {
	var o image.PruneOptions
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove stale temp files, incomplete and unreferenced images and kernels",
		Long: `Remove what nothing needs:
  - temp files of builds and downloads untouched for 15 minutes,
  - incomplete entries and locks of entries that are gone,
  - images no name points at any more,
  - unpacked kernels and downloaded kernel packages that no remaining image
    was built from (as its manifest's inputs record) and that were not used
    in the last 15 minutes (a build may be about to record them),
  - Docker images made by the docker backend (label mvm.managed=1) whose
    image is no longer in the cache, when the daemon is reachable.
Images used by existing VMs, and what they were built from, are always kept;
so are Docker images any container uses. Docker images without the
mvm.managed label are never touched.
With --all, also remove every other image, the Debian base tarballs and all
kernels and kernel packages, however recent. --dry-run reports the same plan
and removes nothing; --json lists every item with what happens to it and why.`,
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
				err = errors.Join(err, pruneDockerImages(cmd.Context(), res, o.Keep))
				if jerr := printPrune(g, res); jerr != nil {
					return jerr
				}
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&o.DryRun, "dry-run", false, "show what would be removed, remove nothing")
	cmd.Flags().BoolVar(&o.All, "all", false, "remove every image, base tarball and kernel not used by a VM")
	return cmd
}

// pruneDockerImages plans, and unless DryRun removes, the mvm-made Docker
// images whose digest is neither an image that stays in the cache nor one a
// VM uses, adding them to res. An unreachable daemon is a note.
func pruneDockerImages(ctx context.Context, res *image.PruneResult, vmDigests []string) error {
	imgs, err := listDockerImages(ctx)
	if err != nil {
		res.Notes = append(res.Notes, err.Error())
		return nil
	}
	cached, inVM := map[string]bool{}, map[string]bool{}
	for _, d := range res.KeptImages() {
		cached[d] = true
	}
	for _, d := range vmDigests {
		inVM["sha256:"+strings.TrimPrefix(d, "sha256:")] = true
	}
	keep := func(d string) bool { return d != "" && (cached[d] || inVM[d]) }
	items := make([]image.PruneItem, len(imgs))
	anyToRemove := false
	for i, im := range imgs {
		pi := image.PruneItem{CacheItem: dockerItem(im)}
		switch {
		case im.InUse:
			pi.Reason = "a container uses it"
		case inVM[im.Digest]:
			pi.Reason = "used by a VM"
		case cached[im.Digest]:
			pi.Reason = "its image is in the cache"
		default:
			pi.Removed, anyToRemove = true, true
			pi.Reason = "its image is no longer in the cache"
		}
		items[i] = pi
	}
	var perr error
	if anyToRemove && !res.DryRun {
		pctx, cancel := context.WithTimeout(ctx, dockerPruneTimeout)
		defer cancel()
		var removed []string
		removed, perr = dockerAPI.prune(pctx, keep)
		gone := map[string]bool{}
		for _, r := range removed {
			gone[r] = true
		}
		for i, im := range imgs {
			if !items[i].Removed {
				continue
			}
			all := len(im.Refs) > 0 || gone[im.ID]
			for _, r := range im.Refs {
				all = all && gone[r]
			}
			if !all {
				items[i].Removed = false
				items[i].Error = "not removed"
				if perr != nil {
					items[i].Error = perr.Error()
				}
			}
		}
	}
	for _, pi := range items {
		if pi.Removed {
			res.Bytes += pi.Bytes
		}
		res.Items = append(res.Items, pi)
	}
	return perr
}

func printPrune(g *globals, res *image.PruneResult) error {
	if g.json {
		return writeJSON(g.stdout, res)
	}
	verb := "Removed"
	if res.DryRun {
		verb = "Would remove"
	}
	n := 0
	for _, it := range res.Items {
		switch {
		case it.Removed:
			n++
			fmt.Fprintf(g.stdout, "%s %s %s (%s): %s\n", verb, it.Kind, itemName(it.CacheItem), humanBytes(it.Bytes), it.Reason)
		case it.Error != "":
			fmt.Fprintf(g.stdout, "Could not remove %s %s: %s\n", it.Kind, itemName(it.CacheItem), it.Error)
		case g.verbose:
			fmt.Fprintf(g.stdout, "Keeping %s %s: %s\n", it.Kind, itemName(it.CacheItem), it.Reason)
		}
	}
	fmt.Fprintf(g.stdout, "%s %d items, %s.\n", verb, n, humanBytes(res.Bytes))
	printNotes(g, res.Notes)
	return nil
}

// itemName is how a prune line names an item: the entry dir or file, with
// the image or kernel name when that says more.
func itemName(it image.CacheItem) string {
	if it.Kind == kindDockerImage {
		return it.Name
	}
	p := filepath.Base(it.Path)
	if it.Name == "" || it.Kind == image.KindDeb {
		return p
	}
	return p + " (" + it.Name + ")"
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
