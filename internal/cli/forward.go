package cli

import (
	"errors"
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/vm"
)

func newForwardCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "forward NAME [HOST:]GUESTPORT...",
		Short: "Forward host ports to TCP ports inside a VM",
		Long: `Listen on 127.0.0.1 and relay every connection to a TCP port on the VM's
loopback, through its guest agent (no guest network needed). HOST defaults
to the guest port; HOST 0 picks a free port and prints it. Runs until Ctrl-C.`,
		Example: `  mvmctl forward web 80            # 127.0.0.1:80 -> web:80
  mvmctl forward web 8080:80 0:5432`,
		ValidArgsFunction: completeVMNames(g),
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usageError{errors.New("forward needs a VM name and at least one port (mvmctl forward NAME [HOST:]GUESTPORT)")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var fwds []vm.PortForward
			for _, a := range args[1:] {
				f, err := vm.ParsePortForward(a)
				if err != nil {
					return usageError{err}
				}
				fwds = append(fwds, f)
			}
			m, err := g.manager()
			if err != nil {
				return err
			}
			return m.Forward(cmd.Context(), args[0], fwds, func(f vm.PortForward, addr net.Addr) {
				fmt.Fprintf(g.stdout, "forwarding %s -> %s:%d\n", addr, args[0], f.GuestPort)
			})
		},
	}
}
