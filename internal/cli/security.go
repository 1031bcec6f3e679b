package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/security"
	"github.com/mvm-dev/mvm/internal/termsafe"
)

func newSecurityCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "security",
		Short: "Check the isolation mvm relies on, on this host",
		Long: `Inspect what mvm's isolation depends on, here and now: agent keys and
their permissions, how each running VMM is confined, accelerators, console
and egress policies, where guest RAM and secrets live, the Docker backend's
weaker isolation and the audit trail. docs/security.md is the threat model.`,
	}
	cmd.AddCommand(newSecurityStatusCommand(g))
	return cmd
}

func newSecurityStatusCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Run every security check; exit 1 if any failed",
		Long: `Run every security check and print one row per finding: STATUS (pass,
info, warn, FAIL), CHECK, DETAIL and, when something can be done, FIX.
Exit status 1 when any check failed, 0 otherwise: warnings do not fail.
It only reads: no key, directory or record is created.`,
		Example: `  mvmctl security status
  mvmctl security status --json`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			env := &security.Env{Dirs: g.dirs, Euid: os.Geteuid(), Host: security.Probe(ctx)}
			if env.VMs, err = m.List(ctx); err != nil {
				return err
			}
			env.Networks, env.NetworksErr = m.Networks().List()
			env.Trust = m.Config.Trust
			env.Templates, _ = m.Templates().List()
			rep := security.Run(env)
			if g.json {
				if err := writeJSON(g.stdout, rep); err != nil {
					return err
				}
				if code := rep.ExitCode(); code != 0 {
					return &ExitError{Code: code}
				}
				return nil
			}
			if err := printSecurity(g.stdout, rep); err != nil {
				return err
			}
			if code := rep.ExitCode(); code != 0 {
				return &ExitError{Code: code, Err: fmt.Errorf("%d of %d security checks failed; see FIX above", rep.Count(security.Fail), len(rep.Checks))}
			}
			return nil
		},
	}
}

// securityCell is s escaped for the terminal, tabs included: a tab would
// start a new column.
func securityCell(s string) string {
	return strings.ReplaceAll(termsafe.String(s), "\t", `\t`)
}

// securityMarks is how each status shows in the table; failures stand out.
var securityMarks = map[security.Status]string{
	security.Pass: "pass", security.Info: "info", security.Warn: "warn", security.Fail: "FAIL",
}

// printSecurity writes the report as a table. Details hold VM, image and
// network names and recorded text: every cell is escaped for the terminal.
func printSecurity(w io.Writer, rep security.Report) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "STATUS\tCHECK\tDETAIL\tFIX")
	for _, c := range rep.Checks {
		fix := c.Fix
		if fix == "" {
			fix = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", securityMarks[c.Status], securityCell(c.Check), securityCell(c.Detail), securityCell(fix))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d checks: %d pass, %d info, %d warn, %d fail\n", len(rep.Checks),
		rep.Count(security.Pass), rep.Count(security.Info), rep.Count(security.Warn), rep.Count(security.Fail))
	return err
}
