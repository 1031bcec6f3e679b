package cli

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/sign"
)

func newVersionCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version information",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			v := struct {
				Version       string `json:"version"`
				AgentProtocol int    `json:"agent_protocol"`
				Go            string `json:"go"`
				Platform      string `json:"platform"`
				// ReleaseKey is the ID of the key update requires, when
				// this is a release build (the key is linked in).
				ReleaseKey string `json:"release_key,omitempty"`
			}{Version, proto.Version, runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH, ""}
			if PinnedReleaseKey != "" {
				k, err := sign.ParsePublicKey([]byte(PinnedReleaseKey))
				if err != nil {
					return fmt.Errorf("this build's pinned release key is broken: %w", err)
				}
				v.ReleaseKey = k.ID
			}
			if g.json {
				return writeJSON(g.stdout, v)
			}
			fmt.Fprintf(g.stdout, "mvmctl %s (agent protocol %d, %s, %s)\n", v.Version, v.AgentProtocol, v.Go, v.Platform)
			if v.ReleaseKey != "" {
				fmt.Fprintf(g.stdout, "updates signed by %s\n", v.ReleaseKey)
			}
			return nil
		},
	}
}
