package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/termsafe"
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
				printHealth(g.stdout, args[0], h, healthy)
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

// printHealth writes the text form of a health report: one table row per
// stage, service and check, then the verdict. Names and details come from
// the guest: they are escaped, one line each.
func printHealth(w io.Writer, name string, h *proto.HealthResult, healthy bool) {
	tw := newTable(w)
	fmt.Fprintln(tw, "KIND\tNAME\tSTATUS\tDETAIL")
	for _, s := range h.Stages {
		fmt.Fprintf(tw, "stage\t%s\t%s\t%s\n", termsafe.String(s.Name), okWord(s.Done, "done", "pending"), termsafe.String(s.Detail))
	}
	for _, s := range h.Services {
		fmt.Fprintf(tw, "service\t%s\t%s\t%s\n", termsafe.String(s.Name), okWord(s.Running, "running", "stopped"), serviceDetail(s.Pid, s.Restarts, termsafe.String(s.Detail)))
	}
	for _, c := range h.Checks {
		fmt.Fprintf(tw, "check\t%s\t%s\t%s (%dms)\n", termsafe.String(c.Name), okWord(c.OK, "healthy", "UNHEALTHY"), termsafe.String(c.Detail), c.DurationMS)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "%s: %s\n", name, okWord(healthy, "healthy", "not healthy"))
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
