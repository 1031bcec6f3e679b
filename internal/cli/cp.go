package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/vm"
)

func newCpCommand(g *globals) *cobra.Command {
	var user, maxSize string
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files and directories between the host and a VM",
		Long: `Copy a file or directory between the host and a VM; one side is NAME:/path
(an absolute guest path). Directories are copied recursively; modes and
modification times are kept, symlinks are copied as links. When DST is an
existing directory the copy goes inside it, otherwise it becomes DST.

A copy out of a VM writes what the guest sends, so it is bounded: by
--max-size, and always by the destination's free space less a reserve (1
GiB, or a tenth of a small filesystem), and to a million entries. Past a
bound the copy is refused and nothing is written.`,
		Example: `  mvmctl cp ./site web:/srv/www
  mvmctl cp web:/var/log/app.log .`,
		ValidArgsFunction: completeVMNames(g),
		Args:              exactArgs(2, "SRC and DST"),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcVM, srcPath := splitGuestPath(args[0])
			dstVM, dstPath := splitGuestPath(args[1])
			if (srcVM == "") == (dstVM == "") {
				return usageError{fmt.Errorf("exactly one of SRC and DST must be NAME:/path")}
			}
			m, err := g.manager()
			if err != nil {
				return err
			}
			var res *proto.CopyResult
			if dstVM != "" {
				res, err = m.CopyTo(cmd.Context(), dstVM, srcPath, dstPath, user)
			} else {
				if user != "" {
					return usageError{fmt.Errorf("--user applies to copies into a VM")}
				}
				var o vm.CopyOutOptions
				if maxSize != "" {
					mib, err := vm.ParseSize(maxSize)
					if err != nil {
						return usageError{fmt.Errorf("--max-size: %w", err)}
					}
					o.MaxBytes = int64(mib) << 20
				}
				res, err = m.CopyFromWith(cmd.Context(), srcVM, srcPath, dstPath, o)
			}
			if err != nil {
				return err
			}
			if g.verbose {
				fmt.Fprintf(g.stderr, "copied %d entries, %d bytes\n", res.Files, res.Bytes)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&user, "user", "u", "", "owner of the files copied into the VM (default root)")
	cmd.Flags().StringVar(&maxSize, "max-size", "", "refuse a copy out of the VM larger than this (e.g. 500M, 2G; default: the free space less a reserve)")
	return cmd
}

// splitGuestPath splits "NAME:/path". Anything else (including "./a:b" and
// "/abs:x") is a host path.
func splitGuestPath(s string) (vmName, path string) {
	name, p, ok := strings.Cut(s, ":")
	if !ok || name == "" || strings.ContainsAny(name, "/.") || !strings.HasPrefix(p, "/") {
		return "", s
	}
	return name, p
}
