package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/doctor"
	"github.com/mvm-dev/mvm/internal/network"
	"github.com/mvm-dev/mvm/internal/sign"
	"github.com/mvm-dev/mvm/internal/vm"
)

// init and dev install packages, create keys and networks: audited.
func init() {
	for _, v := range []string{"init", "dev"} {
		auditedVerbs[v] = true
	}
}

// initStep is one step of host setup and what became of it.
type initStep struct {
	Step   string `json:"step"`
	State  string `json:"state"` // ok (already so), done, would-do, skipped, failed
	Detail string `json:"detail"`
}

type initOptions struct {
	yes, dryRun bool
}

func newInitCommand(g *globals) *cobra.Command {
	var o initOptions
	cmd := &cobra.Command{
		Use:   "init [--yes] [--dry-run]",
		Short: "Set this host up for mvm: packages, directories, a signing key, the default network, then doctor",
		Long: `Set this host up for mvm, step by step, each only if not done already, so
running it twice changes nothing the second time:

  packages       what doctor finds missing, installed with apt-get (asks
                 first on a terminal; --yes to agree, off a terminal it only
                 says what to install)
  directories    mvm's cache, config, state and share directories
  signing key    a "default" key to sign the templates you push
  network        the "default" network VMs join
  doctor         every check again, and what is still missing

--dry-run prints the plan and changes nothing.`,
		Example: `  mvmctl init --dry-run
  sudo mvmctl init --yes`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			steps, err := initHost(cmd.Context(), g, o)
			if perr := printSteps(g, steps); perr != nil {
				return perr
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&o.yes, "yes", "y", false, "install missing packages without asking")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "print what would be done, change nothing")
	return cmd
}

func printSteps(g *globals, steps []initStep) error {
	if g.json {
		return writeJSON(g.stdout, steps)
	}
	for _, s := range steps {
		fmt.Fprintf(g.stdout, "[%-8s] %-13s %s\n", s.State, s.Step, s.Detail)
	}
	return nil
}

// errInitIncomplete: some step failed or was skipped.
var errInitIncomplete = errors.New("host setup is not complete: see the steps above")

func initHost(ctx context.Context, g *globals, o initOptions) ([]initStep, error) {
	m, err := g.manager()
	if err != nil {
		return nil, err
	}
	var steps []initStep
	add := func(step, state, detail string) { steps = append(steps, initStep{step, state, detail}) }
	doc := func() doctor.Report {
		return doctor.Run(ctx, doctor.Options{Dirs: g.dirs, FindAgent: vm.FindAgent, FindAgentFor: vm.FindAgentFor, Networks: m.Networks()})
	}

	// Packages: whatever doctor's fixes say to apt-get install.
	pkgs := missingPackages(doc())
	switch {
	case len(pkgs) == 0:
		add("packages", "ok", "nothing missing")
	case o.dryRun:
		add("packages", "would-do", "apt-get install "+strings.Join(pkgs, " "))
	case !o.yes && !confirm(g, fmt.Sprintf("Install %s with apt-get?", strings.Join(pkgs, " "))):
		add("packages", "skipped", "missing "+strings.Join(pkgs, " ")+": run 'mvmctl init --yes' or apt-get install them")
	default:
		if err := aptInstall(ctx, g, pkgs); err != nil {
			add("packages", "failed", err.Error())
		} else {
			add("packages", "done", "installed "+strings.Join(pkgs, " "))
		}
	}

	// Directories.
	var missing []string
	var statErr error
	for _, d := range []string{g.dirs.Cache, g.dirs.Config, g.dirs.State, g.dirs.Share} {
		if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, d)
		} else if err != nil && statErr == nil {
			statErr = err
		}
	}
	switch {
	case statErr != nil:
		add("directories", "failed", statErr.Error())
	case len(missing) == 0:
		add("directories", "ok", "all present")
	case o.dryRun:
		add("directories", "would-do", "create "+strings.Join(missing, ", "))
	default:
		var err error
		for _, d := range missing {
			if err = os.MkdirAll(d, 0o700); err != nil {
				break
			}
		}
		if err != nil {
			add("directories", "failed", err.Error())
		} else {
			add("directories", "done", "created "+strings.Join(missing, ", "))
		}
	}

	// The default signing key.
	kr := sign.NewKeyring(g.dirs.Config)
	own, err := kr.Own()
	has := slices.ContainsFunc(own, func(p sign.PublicKey) bool { return p.Name == defaultKeyName })
	switch {
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		add("signing key", "failed", err.Error())
	case has:
		add("signing key", "ok", "key "+defaultKeyName+" exists")
	case o.dryRun:
		add("signing key", "would-do", "create key "+defaultKeyName+" (mvmctl key generate) and trust it")
	default:
		pub, err := kr.Generate(defaultKeyName)
		if err == nil {
			_, err = kr.Trust(pub)
		}
		if err != nil {
			add("signing key", "failed", err.Error())
		} else {
			add("signing key", "done", fmt.Sprintf("created key %s (%s)", defaultKeyName, pub.ID))
		}
	}

	// The network `up` joins by default.
	nm := m.Networks()
	netName := g.cfg.DefaultNetwork
	if netName == "" {
		netName = network.DefaultName
	}
	_, nerr := nm.Get(netName)
	switch {
	case netName == network.ModeNone || netName == network.ModeUser:
		add("network", "ok", fmt.Sprintf("default_network = %q needs no network record", netName))
	case nerr == nil:
		add("network", "ok", "network "+netName+" exists")
	case o.dryRun:
		add("network", "would-do", "create network "+netName)
	default:
		n, err := nm.Create(ctx, network.CreateOptions{Name: netName})
		switch {
		case errors.Is(err, network.ErrExists):
			add("network", "ok", "network "+netName+" exists")
		case err != nil:
			add("network", "failed", err.Error())
		default:
			add("network", "done", fmt.Sprintf("created network %s (%s, %s)", n.Name, n.Mode, n.Subnet))
		}
	}

	// Doctor, after all that.
	if o.dryRun {
		add("doctor", "would-do", "run every check again")
	} else if rep := doc(); rep.OK {
		add("doctor", "ok", "every check passes; 'mvmctl up' would use "+rep.Backend.Chosen)
	} else {
		var failed []string
		for _, c := range rep.Checks {
			if c.Status == doctor.Fail {
				failed = append(failed, c.Name)
			}
		}
		add("doctor", "failed", "failing: "+strings.Join(failed, ", ")+" (see 'mvmctl doctor')")
	}

	for _, s := range steps {
		if s.State == "failed" || s.State == "skipped" {
			return steps, &ExitError{Code: 1, Err: errInitIncomplete}
		}
	}
	return steps, nil
}

// missingPackages are the packages doctor's failing and warning checks ask
// to apt-get install, in order, each once.
func missingPackages(rep doctor.Report) []string {
	var out []string
	for _, c := range rep.Checks {
		if c.Status == doctor.OK {
			continue
		}
		rest, ok := strings.CutPrefix(c.Fix, "apt-get install ")
		if !ok {
			continue
		}
		for _, w := range strings.Fields(rest) {
			if strings.HasPrefix(w, "(") {
				break
			}
			if !slices.Contains(out, w) {
				out = append(out, w)
			}
		}
	}
	return out
}

// confirm asks a yes/no question on a terminal; off one the answer is no.
func confirm(g *globals, q string) bool {
	if !isTTY(g.stdin) || g.json {
		return false
	}
	fmt.Fprintf(g.stderr, "%s [y/N] ", q)
	line, _ := bufio.NewReader(g.stdin).ReadString('\n')
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes"
}

// aptInstall installs pkgs with apt-get (through sudo when not root).
func aptInstall(ctx context.Context, g *globals, pkgs []string) error {
	apt, err := exec.LookPath("apt-get")
	if err != nil {
		return fmt.Errorf("no apt-get on this host: install %s with its package manager", strings.Join(pkgs, " "))
	}
	argv := []string{apt}
	if os.Geteuid() != 0 {
		sudo, err := exec.LookPath("sudo")
		if err != nil {
			return fmt.Errorf("installing packages needs root: run 'sudo mvmctl init --yes'")
		}
		argv = []string{sudo, apt}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"-o", "DPkg::Lock::Timeout=600", "update", "-qq"},
		append([]string{"-o", "DPkg::Lock::Timeout=600", "install", "-y", "-qq", "--no-install-recommends"}, pkgs...),
	} {
		cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], args...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = g.stderr, g.stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", args[len(args)-1], err)
		}
	}
	return nil
}

// devVM is the VM `mvmctl dev` keeps for you.
const devVM = "dev"

func newDevCommand(g *globals) *cobra.Command {
	var o initOptions
	var backendName string
	cmd := &cobra.Command{
		Use:   "dev [--yes] [--backend B]",
		Short: "Set the host up (as init does) and open a console in a development VM named dev, booting it if needed",
		Long: `Run init's steps, then make sure a VM named "dev" runs (booted from the
default image on first use, started again if stopped) and, on a terminal,
open its console. Off a terminal it prints how to reach the VM.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			steps, err := initHost(cmd.Context(), g, o)
			if !g.json {
				if perr := printSteps(g, steps); perr != nil {
					return perr
				}
			}
			if err != nil {
				return err
			}
			m, err := g.manager()
			if err != nil {
				return err
			}
			rec, err := m.Get(cmd.Context(), devVM)
			switch {
			case err != nil:
				fmt.Fprintf(g.stderr, "Booting VM %s...\n", devVM)
				rec, err = m.Up(cmd.Context(), vm.UpOptions{Name: devVM, Backend: backendName})
			case rec.State != "running":
				fmt.Fprintf(g.stderr, "Starting VM %s...\n", devVM)
				rec, err = m.Start(cmd.Context(), devVM, vm.StartOptions{})
			}
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, map[string]any{"steps": steps, "vm": listItem(rec)})
			}
			if !isTTY(g.stdin) || !isTTY(g.stdout) {
				fmt.Fprintf(g.stdout, "VM %s is %s (%s). Reach it with: mvmctl console %s, or mvmctl exec %s -- CMD\n", rec.Name, rec.State, rec.Backend, devVM, devVM)
				return nil
			}
			console := newConsoleCommand(g)
			console.SetContext(cmd.Context())
			return console.RunE(console, []string{devVM})
		},
	}
	cmd.Flags().BoolVarP(&o.yes, "yes", "y", false, "install missing packages without asking")
	cmd.Flags().StringVar(&backendName, "backend", "", "backend for a new dev VM (default: as up chooses)")
	return cmd
}
