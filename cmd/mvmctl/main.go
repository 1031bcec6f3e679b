// Command mvmctl builds small Linux images and runs them as microVMs.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/mvm-dev/mvm/internal/cli"
	"github.com/mvm-dev/mvm/internal/supervisor"

	// Backends register themselves.
	_ "github.com/mvm-dev/mvm/internal/backend/docker"
	_ "github.com/mvm-dev/mvm/internal/backend/firecracker"
	_ "github.com/mvm-dev/mvm/internal/backend/qemu"
)

func main() {
	// The per-VM supervisor is this same binary re-executed; it must not go
	// through cobra (no flags, no config).
	if len(os.Args) > 1 && os.Args[1] == supervisor.Arg {
		os.Exit(supervisor.Main(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
