package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/doctor"
	"github.com/mvm-dev/mvm/internal/vm"
)

func newDoctorCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check what this host can run, and explain each decision",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			rep := doctor.Run(cmd.Context(), doctor.Options{Dirs: g.dirs, FindAgent: vm.FindAgent, FindAgentFor: vm.FindAgentFor, Networks: m.Networks()})
			if g.json {
				if err := writeJSON(g.stdout, rep); err != nil {
					return err
				}
			} else {
				if rep.Backend.Chosen != "" {
					fmt.Fprintf(g.stdout, "Backend: %s would be used by 'mvmctl up' (override with --backend or default_backend):\n", rep.Backend.Chosen)
					for _, l := range strings.Split(strings.TrimRight(rep.Backend.String(), "\n"), "\n") {
						fmt.Fprintf(g.stdout, "  %s\n", l)
					}
					fmt.Fprintln(g.stdout)
				}
				for _, c := range rep.Checks {
					mark := map[doctor.Status]string{doctor.OK: "ok  ", doctor.Warn: "warn", doctor.Fail: "FAIL"}[c.Status]
					fmt.Fprintf(g.stdout, "[%s] %-20s %s\n", mark, c.Name, c.Detail)
					if c.Fix != "" {
						fmt.Fprintf(g.stdout, "       %-20s fix: %s\n", "", c.Fix)
					}
				}
			}
			if !rep.OK {
				return &ExitError{Code: 1, Err: fmt.Errorf("some checks failed; see the fixes above")}
			}
			return nil
		},
	}
}
