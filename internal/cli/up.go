package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/image"
	"github.com/mvm-dev/mvm/internal/vm"
)

func newUpCommand(g *globals) *cobra.Command {
	var o vm.UpOptions
	var memory, flake string
	var secrets []string
	cmd := &cobra.Command{
		Use:     "up [--image IMAGE] [--name NAME]",
		Aliases: []string{"run"},
		Short:   "Boot a new VM and wait until its agent answers",
		Long: `Boot a new VM and wait until its agent answers. To boot an existing stopped
VM again use 'mvmctl start NAME'.

Resources are taken from, highest first: flags, the --config file, the
image recipe, the user's config.toml, built-in defaults; 'mvmctl inspect'
shows which one won.

Secrets (--secret NAME=@FILE or NAME=env:VAR, repeatable) are read on the
host and handed to the guest agent over its authenticated channel as soon
as it answers; the guest reads them from /run/secrets/NAME, a tmpfs (0400,
owned by the user the image's services run as, else root). mvmctl keeps
no value: not on the config drive, a disk, the VM directory or in logs,
and the record lists the names only, so 'mvmctl start' and 'restart' ask
for them again. 'snapshot create' refuses a VM with secrets unless
--drop-secrets.`,
		Example: `  mvmctl up
  mvmctl up --image minimal --name web --cpus 2 --memory 512M
  mvmctl up --config web.toml
  mvmctl up --from-snapshot web-snap --name web-2
  mvmctl up --template web --name web-3
  mvmctl up --pool web-pool --name web-4
  mvmctl up --image http --name web -p 8080:80
  mvmctl up --image postgres --name db --secret db_password=@./pw.txt --secret api_token=env:API_TOKEN
  mvmctl network create isolated && mvmctl up --network isolated --name a`,
		Args: exactArgs(0, "no arguments (use --name and --image)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if flake != "" {
				o.Image = image.FlakeImageRef(flake)
			}
			if memory != "" {
				mib, err := vm.ParseSize(memory)
				if err != nil {
					return usageError{fmt.Errorf("--memory: %w", err)}
				}
				o.MemoryMiB = mib
			}
			if o.CPUs < 0 || o.CPUs > 255 {
				return usageError{fmt.Errorf("--cpus %d: must be between 1 and 255", o.CPUs)}
			}
			var err error
			if o.Secrets, err = vm.ParseSecretFlags(secrets, nil); err != nil {
				return usageError{err}
			}
			m, err := g.manager()
			if err != nil {
				return err
			}
			pp := newProgress(g)
			o.Progress = pp.event
			start := time.Now()
			rec, err := m.Up(cmd.Context(), o)
			pp.done()
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, struct {
					Type string `json:"type"`
					VM   any    `json:"vm"`
				}{"result", listItem(rec)})
			}
			fmt.Fprintf(g.stdout, "%s\n", rec.Name)
			fmt.Fprintf(g.stderr, "VM %s is running (%s, %d vCPU, %d MiB) — ready in %.1fs. Try: mvmctl exec %s -- uname -a\n",
				rec.Name, rec.Backend, rec.CPUs, rec.MemoryMiB, time.Since(start).Seconds(), rec.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Name, "name", "", "VM name (default: a random readable name)")
	f.StringVar(&o.Image, "image", "", "catalog image or recipe file to boot (default: minimal; see 'mvmctl image list')")
	f.StringVarP(&o.Image, "file", "f", "", "recipe file to build and boot (same as --image PATH)")
	f.StringVar(&o.Backend, "backend", "", "backend to use (default: chosen automatically)")
	addArchFlag(cmd, &o.Arch)
	f.IntVar(&o.CPUs, "cpus", 0, "number of vCPUs")
	f.StringVar(&memory, "memory", "", "memory size, e.g. 512M or 1G")
	f.StringVar(&flake, "flake", "", "Nix flake to build with 'nix build' and boot (e.g. .#vm; see 'mvmctl build --help')")
	cmd.MarkFlagsMutuallyExclusive("image", "file", "flake")
	f.StringVarP(&o.ConfigFile, "config", "c", "", "VM config file (TOML: name, image, backend, cpus, memory or memory_mib)")
	f.StringVar(&o.FromSnapshot, "from-snapshot", "", "restore a new VM from this snapshot instead of booting (see 'mvmctl snapshot ls')")
	cmd.MarkFlagsMutuallyExclusive("from-snapshot", "image")
	cmd.MarkFlagsMutuallyExclusive("from-snapshot", "file")
	cmd.MarkFlagsMutuallyExclusive("from-snapshot", "flake")
	f.StringVarP(&o.Template, "template", "t", "", "make the VM from a template: its snapshot when it has one, else its image, with its defaults under these flags (see 'mvmctl template list')")
	cmd.MarkFlagsMutuallyExclusive("template", "from-snapshot")
	cmd.MarkFlagsMutuallyExclusive("template", "flake")
	f.StringVar(&o.Pool, "pool", "", "take a ready VM from this warm pool (see 'mvmctl pool ls'); --template T does so from a pool of T when one exists")
	cmd.MarkFlagsMutuallyExclusive("pool", "from-snapshot")
	cmd.MarkFlagsMutuallyExclusive("pool", "image")
	f.StringVar(&o.Network, "network", "", "network to join (default: 'default'; 'none': no NIC; 'user': user-mode networking; see 'mvmctl network ls')")
	f.StringArrayVarP(&o.Publish, "publish", "p", nil, "publish a guest port on the host for the VM's lifetime: [IP:]HOSTPORT:GUESTPORT[/udp] (IP defaults to 127.0.0.1)")
	f.DurationVar(&o.BootTimeout, "timeout", 0, "how long to wait for the guest to become ready (default 3m)")
	f.StringArrayVar(&secrets, "secret", nil, vm.SecretFlagHelp)
	return cmd
}
