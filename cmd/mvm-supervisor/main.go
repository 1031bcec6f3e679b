// Command mvm-supervisor is the per-VM supervisor process (see package
// internal/supervisor). mvmctl starts it; it is not meant to be run by hand.
// It links nothing but the supervisor so that each running VM costs little
// memory on the host.
package main

import (
	"fmt"
	"os"

	"github.com/mvm-dev/mvm/internal/supervisor"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == supervisor.Arg {
		os.Exit(supervisor.Main(os.Args[2:]))
	}
	fmt.Fprintf(os.Stderr, "mvm-supervisor is started by mvmctl for each VM; usage: mvm-supervisor %s VMDIR\n", supervisor.Arg)
	os.Exit(2)
}
