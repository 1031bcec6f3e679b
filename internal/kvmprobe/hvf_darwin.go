package kvmprobe

import (
	"context"
	"os/exec"
	"strings"
)

// HVF reports whether macOS's Hypervisor.framework can run guests (QEMU's
// -accel hvf), the macOS counterpart of Probe: kern.hv_support is 1 on
// hardware and OS versions that have it, 0 or missing otherwise.
func HVF(ctx context.Context) (bool, string) {
	out, err := exec.CommandContext(ctx, "sysctl", "-n", "kern.hv_support").Output()
	if err != nil {
		return false, "sysctl kern.hv_support: " + err.Error()
	}
	if strings.TrimSpace(string(out)) != "1" {
		return false, "Hypervisor.framework not supported on this Mac (kern.hv_support=" + strings.TrimSpace(string(out)) + ")"
	}
	return true, "Hypervisor.framework supported (kern.hv_support=1)"
}
