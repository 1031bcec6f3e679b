package cli

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/image"
)

// nameLister lists the names of one kind of thing, for shell completion.
type nameLister func(g *globals, cmd *cobra.Command) []string

func networkNames(g *globals, _ *cobra.Command) []string {
	m, err := g.manager()
	if err != nil {
		return nil
	}
	ns, _ := m.Networks().List()
	var out []string
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return out
}

// networkFlagNames adds what --network takes besides networks.
func networkFlagNames(g *globals, cmd *cobra.Command) []string {
	return append(networkNames(g, cmd), "none", "user")
}

func imageNames(*globals, *cobra.Command) []string {
	var out []string
	for _, r := range image.Catalog() {
		out = append(out, r.Name+"\t"+r.Description)
	}
	return out
}

func snapshotNames(g *globals, cmd *cobra.Command) []string {
	m, err := g.manager()
	if err != nil {
		return nil
	}
	ss, _ := m.SnapshotList(cmd.Context())
	var out []string
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return out
}

func templateNames(g *globals, _ *cobra.Command) []string {
	m, err := g.manager()
	if err != nil {
		return nil
	}
	ts, _ := m.Templates().List()
	var out []string
	for _, t := range ts {
		out = append(out, t.Name)
	}
	return out
}

func poolNames(g *globals, cmd *cobra.Command) []string {
	m, err := g.manager()
	if err != nil {
		return nil
	}
	ps, _ := m.PoolList(cmd.Context())
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

func backendNames(*globals, *cobra.Command) []string { return backend.Names() }

// Flags that name something, wherever they appear.
var flagNames = map[string]nameLister{
	"network":       networkFlagNames,
	"image":         imageNames,
	"template":      templateNames,
	"from-snapshot": snapshotNames,
	"pool":          poolNames,
	"backend":       backendNames,
}

// Arguments that name something, by command path (without "mvmctl ").
// Image arguments may also be recipe files, so files are offered too.
var argNames = map[string]struct {
	list  nameLister
	files bool
}{
	"network inspect": {networkNames, false},
	"network update":  {networkNames, false},
	"network rm":      {networkNames, false},
	"snapshot rm":     {snapshotNames, false},
	"image info":      {imageNames, true},
	"image fetch":     {imageNames, true},
	"pool inspect":    {poolNames, false},
	"pool rm":         {poolNames, false},
}

// registerNameCompletions completes VM, image, network, snapshot,
// template, pool and backend names in flags and arguments across the
// tree, wherever a command has not said otherwise.
func registerNameCompletions(g *globals, root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for name, list := range flagNames {
			if c.LocalFlags().Lookup(name) == nil {
				continue
			}
			if _, ok := c.GetFlagCompletionFunc(name); ok {
				continue
			}
			_ = c.RegisterFlagCompletionFunc(name, complete(g, list, false, name == "image"))
		}
		if a, ok := argNames[verbOf(c)]; ok && c.ValidArgsFunction == nil {
			c.ValidArgsFunction = complete(g, a.list, strings.Contains(c.Use, "..."), a.files)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// complete offers list's names: for the first argument only, unless many;
// with files, file names too.
func complete(g *globals, list nameLister, many, files bool) cobra.CompletionFunc {
	dir := cobra.ShellCompDirectiveNoFileComp
	if files {
		dir = cobra.ShellCompDirectiveDefault
	}
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 && !many {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return list(g, cmd), dir
	}
}
