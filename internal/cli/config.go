package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/config"
)

func newConfigCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show and edit configuration (config.toml)",
	}
	cmd.AddCommand(configEditCommands(g)...)
	cmd.AddCommand(&cobra.Command{
		Use:   "show",
		Short: "Print the effective configuration and where it comes from",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := g.manager(); err != nil {
				return err
			}
			eff := struct {
				File             string     `json:"file"`
				DefaultCPUs      int        `json:"default_cpus"`
				DefaultMemoryMiB int        `json:"default_memory_mib"`
				DefaultBackend   string     `json:"default_backend"`
				DefaultImage     string     `json:"default_image"`
				BootTimeout      string     `json:"boot_timeout"`
				StopTimeout      string     `json:"stop_timeout"`
				Trust            trustShown `json:"trust"`
				Dirs             any        `json:"dirs"`
			}{
				File:             g.dirs.ConfigFile(),
				DefaultCPUs:      orInt(g.cfg.DefaultCPUs, config.BuiltinCPUs),
				DefaultMemoryMiB: orInt(g.cfg.DefaultMemoryMiB, config.BuiltinMemoryMiB),
				DefaultBackend:   orStr(g.cfg.DefaultBackend, "auto"),
				DefaultImage:     orStr(g.cfg.DefaultImage, config.BuiltinImage),
				BootTimeout:      orDur(g.cfg.BootTimeout, config.BuiltinBootTimeout),
				StopTimeout:      orDur(g.cfg.StopTimeout, config.BuiltinStopTimeout),
				Trust:            showTrust(g.cfg.Trust),
				Dirs:             g.dirs,
			}
			if g.json {
				return writeJSON(g.stdout, eff)
			}
			fmt.Fprintf(g.stdout, "# %s\n", eff.File)
			fmt.Fprintf(g.stdout, "default_cpus = %d\ndefault_memory_mib = %d\ndefault_backend = %q\ndefault_image = %q\nboot_timeout = %q\nstop_timeout = %q\n",
				eff.DefaultCPUs, eff.DefaultMemoryMiB, eff.DefaultBackend, eff.DefaultImage, eff.BootTimeout, eff.StopTimeout)
			fmt.Fprintf(g.stdout, "\n[trust]\nrequire_signatures = %t\nrequire_signatures_for = %s\n", eff.Trust.RequireSignatures, tomlStrings(eff.Trust.RequireSignaturesFor))
			fmt.Fprintf(g.stdout, "\n# directories\n# cache  %s\n# config %s\n# state  %s\n# share  %s\n", g.dirs.Cache, g.dirs.Config, g.dirs.State, g.dirs.Share)
			return nil
		},
	})
	return cmd
}

// trustShown is the [trust] table with every key present (false, an empty
// list), so that show names all the keys one can set.
type trustShown struct {
	RequireSignatures    bool     `json:"require_signatures"`
	RequireSignaturesFor []string `json:"require_signatures_for"`
}

func showTrust(p config.TrustPolicy) trustShown {
	t := trustShown{p.RequireSignatures, p.RequireSignaturesFor}
	if t.RequireSignaturesFor == nil {
		t.RequireSignaturesFor = []string{}
	}
	return t
}

// tomlStrings renders a string array as TOML ("[\"a\", \"b\"]").
func tomlStrings(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func orInt(v, d int) int {
	if v != 0 {
		return v
	}
	return d
}

func orStr(v, d string) string {
	if v != "" {
		return v
	}
	return d
}

func orDur(v config.Duration, d interface{ String() string }) string {
	if v != 0 {
		return time.Duration(v).String()
	}
	return d.String()
}
