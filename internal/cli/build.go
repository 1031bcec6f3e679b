package cli

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/image"
)

func newBuildCommand(g *globals) *cobra.Command {
	var flake, arch string
	cmd := &cobra.Command{
		Use:   "build RECIPE.toml | --flake REF",
		Short: "Build an image from a recipe file or a Nix flake into the cache",
		Long: `Build an image from a recipe file (see docs/recipes.md) or, with --flake,
from a Nix flake whose output holds a kernel (vmlinux or bzImage) and a
root filesystem (rootfs.ext4, rootfs.squashfs or rootfs.tar); the agent is
added to it. The result is cached by digest: building the same recipe
with the same inputs again is instant. Boot it with 'mvmctl up -f
RECIPE.toml' or 'mvmctl up --flake REF'.`,
		Example: `  mvmctl build web.toml
  mvmctl build --flake .#vm
  mvmctl build --json web.toml`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case flake != "" && len(args) > 0:
				return usageError{errors.New("give a recipe file or --flake, not both")}
			case flake == "" && len(args) != 1:
				return usageError{errors.New("want one recipe file (or --flake REF)")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				r   *image.Recipe
				err error
			)
			if flake != "" {
				r, err = image.ResolveFlake(flake)
			} else {
				r, err = image.LoadRecipe(args[0])
			}
			if err != nil {
				return usageError{err}
			}
			return ensureImage(cmd, g, r, arch)
		},
	}
	addArchFlag(cmd, &arch)
	cmd.Flags().StringVar(&flake, "flake", "", "build a Nix flake (e.g. .#vm) with 'nix build' instead of a recipe")
	return cmd
}
