package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newHealthCommand(g *globals) *cobra.Command {
	var cached bool
	cmd := &cobra.Command{
		Use:   "health NAME",
		Short: "Show a VM's readiness, services and health checks",
		Long: `Ask the VM's guest agent for its boot stages, the image's services and the
image's health checks (/etc/mvm/health.d). The checks run now unless
--cached is given. Exits 1 when the VM is not healthy.`,
		ValidArgsFunction: completeVMNames(g),
		Args:              exactArgs(1, "exactly one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			h, err := m.Health(cmd.Context(), args[0], !cached)
			if err != nil {
				return err
			}
			healthy := h.Ready
			for _, c := range h.Checks {
				healthy = healthy && c.OK
			}
			if g.json {
				if err := writeJSON(g.stdout, h); err != nil {
					return err
				}
			} else {
				tw := newTable(g.stdout)
				fmt.Fprintln(tw, "KIND\tNAME\tSTATUS\tDETAIL")
				for _, s := range h.Stages {
					fmt.Fprintf(tw, "stage\t%s\t%s\t%s\n", s.Name, okWord(s.Done, "done", "pending"), s.Detail)
				}
				for _, s := range h.Services {
					fmt.Fprintf(tw, "service\t%s\t%s\t%s\n", s.Name, okWord(s.Running, "running", "stopped"), serviceDetail(s.Pid, s.Restarts, s.Detail))
				}
				for _, c := range h.Checks {
					fmt.Fprintf(tw, "check\t%s\t%s\t%s (%dms)\n", c.Name, okWord(c.OK, "healthy", "UNHEALTHY"), c.Detail, c.DurationMS)
				}
				_ = tw.Flush()
				fmt.Fprintf(g.stdout, "%s: %s\n", args[0], okWord(healthy, "healthy", "not healthy"))
			}
			if !healthy {
				return &ExitError{Code: 1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&cached, "cached", false, "report the latest periodic check results instead of running the checks now")
	return cmd
}

func okWord(ok bool, yes, no string) string {
	if ok {
		return yes
	}
	return no
}

func serviceDetail(pid, restarts int, detail string) string {
	s := ""
	if pid > 0 {
		s = fmt.Sprintf("pid %d", pid)
	}
	if restarts > 0 {
		s += fmt.Sprintf(", %d restarts", restarts)
	}
	if detail != "" {
		s += " " + detail
	}
	return s
}
