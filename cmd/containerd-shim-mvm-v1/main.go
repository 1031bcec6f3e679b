//go:build linux

// Command containerd-shim-mvm-v1 is containerd's runtime shim for mvm
// (runtime type io.containerd.mvm.v1): every container runs in a microVM.
// containerd starts it; see docs/containerd.md.
package main

import (
	"os"

	"github.com/mvm-dev/mvm/internal/shim"
)

func main() { os.Exit(shim.Main(os.Args[1:], os.Stdout, os.Stderr)) }
