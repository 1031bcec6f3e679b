package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/sign"
	"github.com/mvm-dev/mvm/internal/update"
)

// PinnedReleaseKey is the public key (a line as 'mvmctl key export'
// prints it) whose signature this build requires on a release: set by the
// release build with -ldflags -X; empty in development builds, which then
// need [update] key in config.toml.
var PinnedReleaseKey string

// Updating and rolling back replace the binaries: audited.
func init() {
	for _, v := range []string{"update", "uninstall"} {
		auditedVerbs[v] = true
	}
}

// installDir is where the running mvmctl is installed, links resolved.
func installDir(flag string) (string, error) {
	if flag != "" {
		return filepath.Abs(flag)
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return "", err
	}
	return filepath.Dir(exe), nil
}

// releaseKeys are the keys a release must be signed by: [update] key, else
// the pinned one.
func releaseKeys(g *globals) (sign.KeySet, error) {
	var b []byte
	switch {
	case g.cfg.Update.Key != "":
		var err error
		if b, err = os.ReadFile(g.cfg.Update.Key); err != nil {
			return nil, fmt.Errorf("[update] key: %w", err)
		}
	case PinnedReleaseKey != "":
		b = []byte(PinnedReleaseKey)
	default:
		return nil, nil // update.Check says what to do
	}
	pub, err := sign.ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("release key: %w", err)
	}
	return sign.NewKeySet(pub), nil
}

type updateResult struct {
	Current string   `json:"current"`
	Latest  string   `json:"latest"`
	Newer   bool     `json:"newer"`
	Signer  string   `json:"signer,omitempty"`
	Updated []string `json:"updated,omitempty"`
	Dir     string   `json:"dir"`
}

func newUpdateCommand(g *globals) *cobra.Command {
	var check, rollback, force bool
	var url, dir string
	cmd := &cobra.Command{
		Use:   "update [--check] [--rollback]",
		Short: "Replace mvmctl, mvm-agent, mvm-supervisor (and the containerd shim, if installed) with the newest signed release",
		Long: `Fetch the newest release from [update] url in config.toml (or --url), check
its SHA256SUMS against the release key this build pins (or [update] key) and
each binary against SHA256SUMS, then swap the installed binaries in one by
one, atomically, keeping each one replaced as NAME.prev. Anything that does
not verify is refused before a byte is installed. --rollback puts the kept
binaries back; --check only says whether a newer release exists.`,
		Example: `  mvmctl update --check
  mvmctl update
  mvmctl update --rollback`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := g.manager(); err != nil {
				return err
			}
			d, err := installDir(dir)
			if err != nil {
				return err
			}
			if rollback {
				if check {
					return usageError{fmt.Errorf("--check and --rollback do not go together")}
				}
				done, err := update.Rollback(d)
				if err != nil {
					return err
				}
				if g.json {
					return writeJSON(g.stdout, updateResult{Current: Version, Updated: done, Dir: d})
				}
				fmt.Fprintf(g.stderr, "Rolled back %s in %s.\n", strings.Join(done, ", "), d)
				return nil
			}
			keys, err := releaseKeys(g)
			if err != nil {
				return err
			}
			if url == "" {
				url = g.cfg.Update.URL
			}
			o := update.Options{URL: strings.TrimSuffix(url, "/"), Trusted: keys, Dir: d}
			rel, err := update.Check(cmd.Context(), o)
			if err != nil {
				return err
			}
			res := updateResult{Current: Version, Latest: rel.Version, Signer: rel.Signer, Dir: d}
			c, ok := update.Compare(Version, rel.Version)
			res.Newer = !ok || c < 0 // a development build takes any release
			if check || !res.Newer && !force {
				if g.json {
					return writeJSON(g.stdout, res)
				}
				switch {
				case !res.Newer:
					fmt.Fprintf(g.stdout, "mvmctl %s is up to date (latest release %s).\n", Version, rel.Version)
				case !ok:
					fmt.Fprintf(g.stdout, "mvmctl %s is a development build; the latest release is %s (signed by %s): 'mvmctl update' installs it.\n", Version, rel.Version, rel.Signer)
				default:
					fmt.Fprintf(g.stdout, "mvmctl %s: release %s is available (signed by %s): 'mvmctl update' installs it.\n", Version, rel.Version, rel.Signer)
				}
				return nil
			}
			if err := update.Apply(cmd.Context(), o, rel); err != nil {
				return err
			}
			for b := range rel.Files {
				res.Updated = append(res.Updated, b)
			}
			if g.json {
				return writeJSON(g.stdout, res)
			}
			fmt.Fprintf(g.stderr, "Updated %s to %s in %s (the replaced ones are kept: 'mvmctl update --rollback').\n", strings.Join(sortedStrings(res.Updated), ", "), rel.Version, d)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&check, "check", false, "only say whether a newer release exists")
	f.BoolVar(&rollback, "rollback", false, "put back the binaries the last update replaced")
	f.BoolVar(&force, "force", false, "install the latest release even if it is not newer")
	f.StringVar(&url, "url", "", "release root (default: [update] url in config.toml)")
	f.StringVar(&dir, "install-dir", "", "directory of the installed binaries (default: mvmctl's own)")
	_ = f.MarkHidden("install-dir")
	return cmd
}

func sortedStrings(s []string) []string {
	out := append([]string(nil), s...)
	slices.Sort(out)
	return out
}

func runtimeGOARCH() string { return runtime.GOARCH }
