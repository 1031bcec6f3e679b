//go:build linux && !amd64

package kvmprobe

import "fmt"

// runArch on architectures without a test program yet: creating a vCPU is
// the strongest check we make, and the reason says so.
func runArch(kvm, vm int) (bool, string) {
	s, why := setup(kvm, vm, 0x1000, nil)
	defer s.close()
	if why != "" {
		return false, why
	}
	return true, fmt.Sprintf("%s: VM and vCPU created (guest execution not probed on this architecture)", Device)
}
