// Command fcstandin is a test-only stand-in for the firecracker binary: it
// serves Firecracker's API with its rules and runs the guest on QEMU (see
// internal/backend/firecracker/standin). Tests point MVM_FIRECRACKER_BIN
// at it; it is never installed.
package main

import (
	"os"

	"github.com/mvm-dev/mvm/internal/backend/firecracker/standin"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

func main() {
	// The qemu backend re-executes this binary as its VM supervisor.
	if len(os.Args) > 1 && os.Args[1] == supervisor.Arg {
		os.Exit(supervisor.Main(os.Args[2:]))
	}
	os.Exit(standin.Main(os.Args[1:]))
}
