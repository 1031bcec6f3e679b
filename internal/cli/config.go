package cli

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

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
			keys, err := shownKeys(g.cfg)
			if err != nil {
				return err
			}
			if g.json {
				out := map[string]any{"file": g.dirs.ConfigFile(), "dirs": g.dirs}
				for _, k := range keys {
					if k.table == "" {
						out[k.name] = k.value
						continue
					}
					t, _ := out[k.table].(map[string]any)
					if t == nil {
						t = map[string]any{}
						out[k.table] = t
					}
					t[k.name] = k.value
				}
				return writeJSON(g.stdout, out)
			}
			fmt.Fprintf(g.stdout, "# %s\n", g.dirs.ConfigFile())
			table := ""
			for _, k := range keys {
				if k.table != table {
					table = k.table
					fmt.Fprintf(g.stdout, "\n[%s]\n", table)
				}
				fmt.Fprintf(g.stdout, "%s = %s\n", k.name, tomlLiteral(k.value))
			}
			fmt.Fprintf(g.stdout, "\n# directories\n# cache  %s\n# config %s\n# state  %s\n# share  %s\n", g.dirs.Cache, g.dirs.Config, g.dirs.State, g.dirs.Share)
			return nil
		},
	})
	return cmd
}

// shownKey is one key of config show with the value in use.
type shownKey struct {
	table, name string // "trust", "require_signatures"; table "" for top-level keys
	value       any
}

// shownKeys is every key config.Keys lists, top-level ones first, with its
// value from config.toml or else the built-in default (as config get has
// it). Built from that list, so a key added to config.toml's schema is
// shown without anyone remembering to add it here.
func shownKeys(cfg *config.Config) ([]shownKey, error) {
	var top, tables []shownKey
	for _, k := range config.Keys() {
		v, set, err := cfg.Get(k.Name)
		if err != nil {
			return nil, err
		}
		if !set {
			v = builtin(k.Name)
		}
		table, name, dotted := strings.Cut(k.Name, ".")
		if !dotted {
			top = append(top, shownKey{"", k.Name, v})
			continue
		}
		tables = append(tables, shownKey{table, name, v})
	}
	// Stable: keys of one table stay together and in config.Keys' order.
	slices.SortStableFunc(tables, func(a, b shownKey) int { return strings.Compare(a.table, b.table) })
	return append(top, tables...), nil
}

// tomlLiteral renders a config value as config.toml would hold it.
func tomlLiteral(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case []string:
		return tomlStrings(x)
	default:
		return fmt.Sprint(x)
	}
}

// tomlStrings renders a string array as TOML ("[\"a\", \"b\"]").
func tomlStrings(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
