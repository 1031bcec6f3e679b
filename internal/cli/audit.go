package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/audit"
	"github.com/mvm-dev/mvm/internal/paths"
	"github.com/mvm-dev/mvm/internal/termsafe"
)

// auditedVerbs are the commands (paths without "mvmctl ") that change state
// and so are recorded in the audit trail, whether they succeed or fail.
// Read-only commands (ls, inspect, logs, health, doctor, version, image
// list, audit tail...) are not recorded; TestAuditedVerbsClassified makes
// every new command pick a side.
var auditedVerbs = map[string]bool{
	"up":              true,
	"down":            true,
	"start":           true,
	"restart":         true,
	"rm":              true,
	"pause":           true,
	"resume":          true,
	"exec":            true,
	"console":         true,
	"cp":              true,
	"forward":         true,
	"snapshot create": true,
	"snapshot rm":     true,
	"template init":   true,
	"template create": true,
	"template build":  true,
	"template edit":   true,
	"template delete": true,
	"template push":   true,
	"template pull":   true,
	"network create":  true,
	"network update":  true,
	"network rm":      true,
	"network prune":   true,
	"build":           true,
	"image fetch":     true, // builds into the cache, like build
	"cache prune":     true,
	"pool create":     true,
	"pool rm":         true,
}

// verbOf is cmd's path without the binary's name, e.g. "network create".
func verbOf(cmd *cobra.Command) string {
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

// recordAudit appends the audit record of one run of mvmctl (Main's args,
// the command that ran, its error and exit code) when cmd is a
// state-changing verb. It never changes the outcome: when the trail cannot
// be written it prints one warning on stderr.
func recordAudit(ctx context.Context, g *globals, cmd *cobra.Command, args []string, runErr error, code int) {
	if cmd == nil || cmd == cmd.Root() || !auditedVerbs[verbOf(cmd)] {
		return
	}
	if h := cmd.Flags().Lookup("help"); h != nil && h.Changed {
		return
	}
	if g.purged {
		// uninstall --purge deleted the trail with the rest of the state
		// on purpose; writing it now would make the state dir again.
		return
	}
	rec := audit.Record{
		Verb:   verbOf(cmd),
		Target: auditTarget(cmd),
		Args:   audit.RedactArgs(args, flagLookup(cmd)),
		Result: "ok",
		Exit:   code,
	}
	if runErr != nil {
		rec.Result = "error: " + runErr.Error()
	} else if code != 0 {
		rec.Result = fmt.Sprintf("error: exit status %d", code)
	}
	if err := writeAudit(ctx, g, rec); err != nil {
		fmt.Fprintln(g.stderr, "mvmctl: warning: audit trail not written:", termsafe.Text(err.Error()))
	}
}

func writeAudit(ctx context.Context, g *globals, rec audit.Record) error {
	dir, err := auditDir(g)
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	// Record an interrupted verb too: the lock wait has its own timeout.
	_, err = audit.New(dir).Append(context.WithoutCancel(ctx), rec)
	return err
}

// auditDir is <state>/audit; it needs the environment only, not the config.
func auditDir(g *globals) (string, error) {
	if g.dirs.State != "" {
		return audit.Dir(g.dirs.State), nil
	}
	dirs, err := paths.Resolve()
	if err != nil {
		return "", fmt.Errorf("resolve the state directory: %w", err)
	}
	return audit.Dir(dirs.State), nil
}

// auditTarget is the VM, network or snapshot the verb acts on: --name, the
// VM side of cp, else the first positional argument ("" when none).
func auditTarget(cmd *cobra.Command) string {
	if f := cmd.Flags().Lookup("name"); f != nil && f.Value.String() != "" {
		return f.Value.String()
	}
	pos := cmd.Flags().Args()
	if verbOf(cmd) == "cp" {
		for _, a := range pos {
			if vmName, _ := splitGuestPath(a); vmName != "" {
				return vmName
			}
		}
	}
	if len(pos) > 0 {
		return pos[0]
	}
	return ""
}

// flagLookup tells audit.RedactArgs which of cmd's flags take values.
func flagLookup(cmd *cobra.Command) audit.FlagLookup {
	return func(name string, short bool) (string, bool, bool) {
		fs := cmd.Flags()
		f := fs.Lookup(name)
		if short {
			f = fs.ShorthandLookup(name)
		}
		if f == nil {
			return "", false, false
		}
		return f.Name, f.NoOptDefVal == "", true
	}
}

func newAuditCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show and verify the audit trail of state-changing commands",
		Long: `Every state-changing command (up, down, rm, exec, network create...) appends
one JSON line to <state>/audit/audit.log: time, uid, pid, verb, target,
arguments (secrets redacted), result and exit code. Each line carries the
SHA-256 of the line before it, so that 'mvmctl audit verify' detects an
edited, removed or truncated line. The file is rotated at 8 MiB; the chain
continues across files.`,
	}
	cmd.AddCommand(newAuditTailCommand(g), newAuditVerifyCommand(g))
	return cmd
}

func newAuditTailCommand(g *globals) *cobra.Command {
	var n int
	var follow bool
	cmd := &cobra.Command{
		Use:   "tail [-n N] [-f]",
		Short: "Print the latest audit records",
		Example: `  mvmctl audit tail
  mvmctl audit tail -n 100 --json
  mvmctl audit tail -f`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if n < 0 {
				return usageError{fmt.Errorf("-n %d: must not be negative", n)}
			}
			dir, err := auditDir(g)
			if err != nil {
				return err
			}
			p := &auditPrinter{w: g.stdout, warn: g.stderr, json: g.json}
			if follow {
				p.header()
				return audit.Follow(cmd.Context(), dir, n, p.line)
			}
			lines, err := audit.Tail(dir, n)
			if err != nil {
				return err
			}
			if len(lines) == 0 && !g.json {
				fmt.Fprintln(g.stderr, "No audit records yet.")
				return nil
			}
			p.header()
			for _, l := range lines {
				if err := p.line(l); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&n, "lines", "n", 20, "how many records to print")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new records (Ctrl-C to stop)")
	return cmd
}

// auditPrinter prints audit lines as table rows or JSON lines.
type auditPrinter struct {
	w, warn io.Writer
	json    bool
}

const auditRowFormat = "%-20s  %-6s  %-15s  %-20s  %s\n"

func (p *auditPrinter) header() {
	if !p.json {
		fmt.Fprintf(p.w, auditRowFormat, "TIME", "UID", "VERB", "TARGET", "RESULT")
	}
}

func (p *auditPrinter) line(l []byte) error {
	r, err := audit.DecodeLine(l)
	if err != nil {
		fmt.Fprintln(p.warn, "mvmctl: warning: skipping an audit line that does not decode (see 'mvmctl audit verify'):", termsafe.String(err.Error()))
		return nil
	}
	if p.json {
		// DecodeLine accepts only the canonical encoding: l is the record.
		_, err := fmt.Fprintf(p.w, "%s\n", l)
		return err
	}
	result := r.Result
	if r.Exit != 0 && result != fmt.Sprintf("error: exit status %d", r.Exit) {
		result = fmt.Sprintf("%s (exit %d)", result, r.Exit)
	}
	target := r.Target
	if target == "" {
		target = "-"
	}
	_, err = fmt.Fprintf(p.w, auditRowFormat, r.Time.Format(time.RFC3339), fmt.Sprint(r.UID),
		termsafe.String(r.Verb), termsafe.String(target), termsafe.String(result))
	return err
}

func newAuditVerifyCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check that no audit record was edited, removed or truncated",
		Long: `Walk every audit file in order and check that each line is a well-formed
record whose prev is the SHA-256 of the line before it. Reports the first bad
file and line and exits 1; prints "ok: N records in M files" otherwise.
Removing lines from the very end of audit.log cannot be detected this way.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := auditDir(g)
			if err != nil {
				return err
			}
			sum, err := audit.Verify(dir)
			var ve *audit.VerifyError
			if err != nil && !errors.As(err, &ve) {
				return fmt.Errorf("audit verify: %w", err)
			}
			if g.json {
				if err := writeJSON(g.stdout, struct {
					OK bool `json:"ok"`
					audit.Summary
					Error *audit.VerifyError `json:"error,omitempty"`
				}{ve == nil, sum, ve}); err != nil {
					return err
				}
				if ve != nil {
					return &ExitError{Code: 1}
				}
				return nil
			}
			if ve != nil {
				return fmt.Errorf("audit verify: %w (%d good records before it)", ve, sum.Records)
			}
			fmt.Fprintf(g.stdout, "ok: %d records in %d files\n", sum.Records, sum.Files)
			return nil
		},
	}
}
