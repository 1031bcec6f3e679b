package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/config"
)

// Setting and unsetting keys change what every later command does, so they
// are audited; get and keys only read.
func init() {
	for _, v := range []string{"config set", "config unset"} {
		auditedVerbs[v] = true
	}
}

// configEditCommands are config get, set, unset and keys.
func configEditCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{newConfigGetCommand(g), newConfigSetCommand(g), newConfigUnsetCommand(g), newConfigKeysCommand(g)}
}

func completeConfigKeys(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, k := range config.Keys() {
		out = append(out, k.Name+"\t"+k.Help)
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// builtin is the value mvm uses for a key no config file sets.
func builtin(name string) any {
	k, err := config.LookupKey(name)
	if err != nil {
		return nil
	}
	return k.Default
}

// configKey loads the config (so a broken file is reported first) and
// checks that name is a key.
func configKey(g *globals, name string) error {
	if _, err := g.manager(); err != nil {
		return err
	}
	if _, err := config.LookupKey(name); err != nil {
		return usageError{err}
	}
	return nil
}

type configValue struct {
	Key    string `json:"key"`
	Value  any    `json:"value"`
	Source string `json:"source"` // "config file" or "built-in default"
	File   string `json:"file"`
}

func newConfigGetCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:               "get KEY",
		Short:             "Print the value mvm uses for one config key (from config.toml or the built-in default)",
		Args:              exactArgs(1, "one config key ('mvmctl config keys' lists them)"),
		ValidArgsFunction: completeConfigKeys,
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := g.manager(); err != nil {
				return err
			}
			v, set, err := g.cfg.Get(args[0])
			if err != nil {
				return usageError{err}
			}
			cv := configValue{Key: args[0], Value: v, Source: "config file", File: g.dirs.ConfigFile()}
			if !set {
				cv.Value, cv.Source = builtin(args[0]), "built-in default"
			}
			if g.json {
				return writeJSON(g.stdout, cv)
			}
			switch x := cv.Value.(type) {
			case []string:
				fmt.Fprintln(g.stdout, strings.Join(x, ","))
			default:
				fmt.Fprintln(g.stdout, x)
			}
			return nil
		},
	}
}

func newConfigSetCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "set KEY VALUE",
		Short: "Set a key in config.toml, checked as the file is; comments and other keys stay as they are",
		Long: `Set KEY to VALUE in config.toml (created if missing). The edited file must
load exactly as mvm loads it (types, ranges), or nothing is written. A list
takes comma-separated items; a duration takes Go syntax ("90s", "2m").`,
		Example: `  mvmctl config set default_memory_mib 512
  mvmctl config set boot_timeout 5m
  mvmctl config set trust.require_signatures_for registry.example.com/team,s3://templates`,
		Args:              exactArgs(2, "a config key and its value"),
		ValidArgsFunction: completeConfigKeys,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := configKey(g, args[0]); err != nil {
				return err
			}
			if err := config.SetInFile(g.dirs.ConfigFile(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "Set %s in %s.\n", args[0], g.dirs.ConfigFile())
			return nil
		},
	}
}

func newConfigUnsetCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:               "unset KEY",
		Short:             "Remove a key from config.toml, so its built-in default applies again",
		Args:              exactArgs(1, "one config key"),
		ValidArgsFunction: completeConfigKeys,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := configKey(g, args[0]); err != nil {
				return err
			}
			return config.UnsetInFile(g.dirs.ConfigFile(), args[0])
		},
	}
}

func newConfigKeysCommand(g *globals) *cobra.Command {
	var f listFormat
	type keyView struct {
		Name    string `json:"name"`
		Kind    string `json:"kind"`
		Default any    `json:"default"`
		Help    string `json:"help"`
	}
	return withFormat(g, &cobra.Command{
		Use:   "keys",
		Short: "List the keys config.toml takes, with their kinds and built-in defaults",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var items []keyView
			for _, k := range config.Keys() {
				items = append(items, keyView{k.Name, k.Kind, builtin(k.Name), k.Help})
			}
			if g.json {
				return writeJSON(g.stdout, items)
			}
			if f.set() {
				return f.write(g.stdout, items)
			}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "KEY\tKIND\tDEFAULT\tMEANING")
			for _, it := range items {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", it.Name, it.Kind, it.Default, it.Help)
			}
			return tw.Flush()
		},
	}, &f, keyView{})
}
