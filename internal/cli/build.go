package cli

import (
	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/image"
)

func newBuildCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "build RECIPE.toml",
		Short: "Build an image from a recipe file into the cache",
		Long: `Build an image from a recipe file (see docs/recipes.md). The result is
cached by digest: building the same recipe with the same inputs again is
instant. Boot it with 'mvmctl up --image NAME' once it is in the catalog,
or inspect it with 'mvmctl image info RECIPE.toml'.`,
		Args: exactArgs(1, "one recipe file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := image.LoadRecipe(args[0])
			if err != nil {
				return usageError{err}
			}
			return ensureImage(cmd, g, r)
		},
	}
}
