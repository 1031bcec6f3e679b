package qemu

import (
	"path/filepath"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

// Disks returns the drives the VM was started with (its own overlay first),
// so a later cold boot can reuse them instead of making fresh ones.
func (h *Handle) Disks() []backend.Disk {
	if h.rec.Launch == nil {
		return nil
	}
	return append([]backend.Disk(nil), h.rec.Launch.Disks...)
}

// Facts describes the VM for `inspect`: processes, sockets, disks, transport.
func (h *Handle) Facts() map[string]any {
	f := map[string]any{
		"dir":       h.dir,
		"transport": h.rec.Transport,
		"accel":     h.rec.Accel,
		"sockets": map[string]string{
			"qmp":    filepath.Join(h.dir, qmpSock),
			"serial": filepath.Join(h.dir, serialSock),
			"agent":  filepath.Join(h.dir, supervisor.AgentSock),
		},
		"logs": map[string]string{"qemu": filepath.Join(h.dir, qemuLog)},
		"argv": h.rec.Argv,
	}
	if h.rec.CID != 0 {
		f["cid"] = h.rec.CID
	}
	if h.rec.Snapshot != "" {
		f["restored_from"] = h.rec.Snapshot
	}
	if p, err := supervisor.ReadPids(h.dir); err == nil {
		f["pids"] = map[string]any{
			"supervisor": p.Supervisor.Pid, "supervisor_alive": p.Supervisor.Alive(),
			"vmm": p.VMM.Pid, "vmm_alive": p.VMM.Alive(),
		}
	}
	if ex, err := supervisor.ReadExit(h.dir); err == nil {
		f["last_exit"] = ex
	}
	var disks []map[string]any
	for _, d := range h.Disks() {
		disks = append(disks, map[string]any{"id": d.ID, "path": d.Path, "format": d.Format, "read_only": d.ReadOnly})
	}
	f["disks"] = disks
	return f
}
