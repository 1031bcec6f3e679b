package qemu

import "github.com/mvm-dev/mvm/internal/supervisor"

// PID returns the QEMU process id, or 0 when it is not recorded.
func (h *Handle) PID() int {
	p, err := supervisor.ReadPids(h.dir)
	if err != nil {
		return 0
	}
	return p.VMM.Pid
}
