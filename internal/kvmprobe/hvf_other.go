//go:build !darwin

package kvmprobe

import (
	"context"
	"runtime"
)

// HVF reports whether macOS's Hypervisor.framework can run guests; it is
// macOS-only.
func HVF(context.Context) (bool, string) {
	return false, "Hypervisor.framework is macOS-only (this host runs " + runtime.GOOS + ")"
}
