package cli

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/agent/proto"
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
			}{Version, proto.Version, runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH}
			if g.json {
				return writeJSON(g.stdout, v)
			}
			fmt.Fprintf(g.stdout, "mvmctl %s (agent protocol %d, %s, %s)\n", v.Version, v.AgentProtocol, v.Go, v.Platform)
			return nil
		},
	}
}
