// Package cli wires mvmctl's commands. Each command lives in its own file,
// parses flags, calls one function of an internal package and formats the
// result; no lifecycle logic lives here.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/config"
	"github.com/mvm-dev/mvm/internal/paths"
	"github.com/mvm-dev/mvm/internal/store"
	"github.com/mvm-dev/mvm/internal/termsafe"
	"github.com/mvm-dev/mvm/internal/vm"
)

// Version is set at build time with -ldflags "-X .../cli.Version=...".
var Version = "dev"

// globals are the persistent flags and lazily built shared state.
type globals struct {
	json    bool
	verbose bool
	stdout  io.Writer
	stderr  io.Writer
	stdin   io.Reader

	dirs paths.Dirs
	cfg  *config.Config
	mgr  *vm.Manager
	log  *slog.Logger
	// process is set when this tree is the whole process (Main), which may
	// then own process-wide state such as the default logger.
	process bool
	// purged: uninstall --purge removed the state directory, audit trail
	// and all, so nothing more is written there.
	purged bool
}

// manager resolves paths and config on first use, so that commands that need
// neither (version, completions, --help) work with a broken config.
func (g *globals) manager() (*vm.Manager, error) {
	if g.mgr != nil {
		return g.mgr, nil
	}
	dirs, err := paths.Resolve()
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load(dirs.ConfigFile())
	if err != nil {
		return nil, err
	}
	g.dirs, g.cfg = dirs, cfg
	g.mgr = vm.New(dirs, cfg, g.log)
	return g.mgr, nil
}

// ExitError carries a specific process exit code (e.g. the guest's for exec).
type ExitError struct {
	Code int
	Err  error // may be nil: exit quietly with Code
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// usageError marks errors in how the command was invoked (exit code 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// runtimeError marks errors from a command's own work (exit code 1).
type runtimeError struct{ error }

func (e runtimeError) Unwrap() error { return e.error }

// NewRoot builds the command tree.
func NewRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	return newRoot(&globals{stdin: stdin, stdout: stdout, stderr: stderr})
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "mvmctl",
		Short: "Build small Linux images and run them as microVMs",
		Long: `mvmctl builds small Linux images and runs them as microVMs on the best
backend this host has, and reaches every VM through its own authenticated
guest agent: exec, console, health. No SSH.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			level := slog.LevelWarn
			if g.verbose {
				level = slog.LevelDebug
			}
			g.log = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
			if g.process {
				// Backends log through the default logger: -v shows them too.
				slog.SetDefault(g.log)
			}
		},
	}
	root.SetIn(g.stdin)
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.PersistentFlags().BoolVar(&g.json, "json", false, "machine-readable JSON output")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "verbose logging on stderr")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.SetVersionTemplate("mvmctl {{.Version}}\n")

	root.AddCommand(
		newUpCommand(g),
		newExecCommand(g),
		newConsoleCommand(g),
		newLsCommand(g),
		newLogsCommand(g),
		newDownCommand(g),
		newRmCommand(g),
		newDoctorCommand(g),
		newVersionCommand(g),
		newCompletionsCommand(g),
		newConfigCommand(g),
		newImageCommand(g),
		newCacheCommand(g),
		newBuildCommand(g),
		newStartCommand(g),
		newRestartCommand(g),
		newInspectCommand(g),
		newPauseCommand(g),
		newResumeCommand(g),
		newSnapshotCommand(g),
		newTemplateCommand(g),
		newForwardCommand(g),
		newCpCommand(g),
		newHealthCommand(g),
		newDiffCommand(g),
		newEventsCommand(g),
		newNetworkCommand(g),
		newAuditCommand(g),
		newSecurityCommand(g),
		newKeyCommand(g),
		newBenchCommand(g),
		newPoolCommand(g),
		newInitCommand(g),
		newDevCommand(g),
		newUpdateCommand(g),
		newUninstallCommand(g),
	)
	markRuntime(root)
	registerNameCompletions(g, root)
	return root
}

// markRuntime wraps every RunE so errors it returns are runtime errors; any
// other error from Execute (unknown command, bad flag, wrong args) is usage.
func markRuntime(c *cobra.Command) {
	if c.RunE != nil {
		run := c.RunE
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if err := run(cmd, args); err != nil {
				var ue usageError
				if errors.As(err, &ue) {
					return err
				}
				return runtimeError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		markRuntime(sub)
	}
}

// Main runs mvmctl and returns the process exit code. Error messages are
// escaped as a whole (termsafe.Text): they wrap the guest agent's messages
// and guest console lines.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr, process: true}
	root := newRoot(g)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	// State-changing verbs are recorded with their outcome (audit.go).
	defer func() { recordAudit(ctx, g, cmd, args, err, code) }()
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			fmt.Fprintln(stderr, "mvmctl:", termsafe.Text(ee.Err.Error()))
		}
		return ee.Code
	}
	var re runtimeError
	if errors.As(err, &re) {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(stderr, "mvmctl: interrupted")
			return 130
		}
		fmt.Fprintln(stderr, "mvmctl:", termsafe.Text(err.Error()))
		return 1
	}
	fmt.Fprintln(stderr, "mvmctl:", termsafe.Text(err.Error()))
	fmt.Fprintln(stderr, "Run 'mvmctl --help' for usage.")
	return 2
}

// exactArgs is cobra.ExactArgs with a usage error and a clearer message.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s takes %s (got %d arguments)", cmd.CommandPath(), what, len(args))}
		}
		return nil
	}
}

// minArgs requires at least n arguments (names of VMs or snapshots).
func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usageError{fmt.Errorf("%s needs at least %d %s", cmd.CommandPath(), n, what)}
		}
		return nil
	}
}

// forEachName runs op on every name, prints each name that succeeded (or
// its record with --json when op returns one), and fails with exit code 1
// if any failed, after trying them all.
func forEachName(g *globals, names []string, op func(name string) (*store.Record, error)) error {
	bad := 0
	for _, name := range names {
		rec, err := op(name)
		if err != nil {
			fmt.Fprintln(g.stderr, "mvmctl:", err)
			bad++
			continue
		}
		switch {
		case rec != nil && g.json:
			_ = writeJSON(g.stdout, listItem(rec))
		default:
			fmt.Fprintln(g.stdout, name)
		}
	}
	if bad > 0 {
		return &ExitError{Code: 1}
	}
	return nil
}

// completeVMNames offers VM names for shell completion.
func completeVMNames(g *globals) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		m, err := g.manager()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		recs, _ := m.Store.List()
		var out []string
		for _, r := range recs {
			out = append(out, r.Name)
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func isTTY(f any) bool {
	if ff, ok := f.(*os.File); ok {
		st, err := ff.Stat()
		return err == nil && st.Mode()&os.ModeCharDevice != 0
	}
	return false
}
