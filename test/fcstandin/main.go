// Command fcstandin is a test-only stand-in for the firecracker binary —
// and, run under the name "jailer", for its jailer: it serves
// Firecracker's API with its rules and runs the guest on QEMU (see
// internal/backend/firecracker/standin). Tests point MVM_FIRECRACKER_BIN
// (and MVM_JAILER_BIN, a link named jailer) at it; it is never installed.
package main

import (
	"os"
	"path/filepath"

	"github.com/mvm-dev/mvm/internal/backend/firecracker/standin"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

func main() {
	// The qemu backend re-executes this binary as its VM supervisor.
	if len(os.Args) > 1 && os.Args[1] == supervisor.Arg {
		os.Exit(supervisor.Main(os.Args[2:]))
	}
	if filepath.Base(os.Args[0]) == "jailer" {
		os.Exit(standin.JailerMain(os.Args[1:], os.Stderr))
	}
	os.Exit(standin.Main(os.Args[1:]))
}
