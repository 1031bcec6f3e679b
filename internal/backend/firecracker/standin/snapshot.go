package standin

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"time"
)

// A stand-in snapshot. Firecracker writes its device state to
// snapshot_path and guest RAM to mem_file_path; the stand-in's guest is a
// QEMU VM, whose snapshot (RAM, device state, disks) is a directory the
// qemu backend writes. So mem_file_path becomes that directory, and
// snapshot_path a small pointer file carrying what the real state carries
// by name — drive paths as given, the vsock socket, the NICs — so a load
// resolves and overrides them as Firecracker does. Both move as two
// paths, as Firecracker's files do.
type pointer struct {
	StandIn   string  `json:"standin"` // Version
	Drives    []Drive `json:"drives"`
	NICs      []NIC   `json:"nics"`
	VsockCID  uint32  `json:"vsock_cid"`
	VsockPath string  `json:"vsock_path"`
	AgentPort uint32  `json:"agent_port,omitempty"`
}

func (s *Server) createSnapshot(_ string, obj map[string]json.RawMessage) (any, *apiError) {
	if !s.paused {
		return nil, bad("Create snapshot error: the microVM must be paused first.")
	}
	if str(obj, "snapshot_type") == "Diff" {
		return nil, bad("stand-in: diff snapshots are not emulated")
	}
	sn, ok := s.guest.(Snapshotter)
	if !ok {
		return nil, bad("stand-in: this guest cannot be saved")
	}
	statePath, memPath := s.resolve(str(obj, "snapshot_path")), s.resolve(str(obj, "mem_file_path"))
	os.RemoveAll(memPath) // Firecracker truncates existing files
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := sn.Snapshot(ctx, memPath); err != nil {
		return nil, bad("Create snapshot error: %v", err)
	}
	p := pointer{StandIn: Version, Drives: s.drives, NICs: s.nics, VsockCID: s.cfg.VsockCID, VsockPath: s.cfg.VsockPath}
	if ap, ok := s.guest.(interface{ AgentPort() uint32 }); ok {
		p.AgentPort = ap.AgentPort()
	}
	b, _ := json.Marshal(p)
	if err := os.WriteFile(statePath, b, 0o600); err != nil {
		return nil, bad("Create snapshot error: write %s: %v", statePath, err)
	}
	return nil, nil
}

func (s *Server) loadSnapshot(_ string, obj map[string]json.RawMessage) (any, *apiError) {
	if s.resource {
		return nil, bad("Load snapshot error: Loading a microVM snapshot not allowed after configuring boot-specific resources.")
	}
	if has(obj, "mem_backend") == has(obj, "mem_file_path") {
		return nil, bad("An error occurred when deserializing the json body of a request: exactly one of mem_backend and mem_file_path is required.")
	}
	if s.Load == nil {
		return nil, bad("stand-in: snapshot load is not emulated")
	}
	// From here on a failure ends the process, as it ends Firecracker.
	v, aerr := s.load(obj)
	if aerr != nil {
		s.quit()
	}
	return v, aerr
}

func (s *Server) load(obj map[string]json.RawMessage) (any, *apiError) {
	fail := func(format string, a ...any) *apiError {
		return bad("Load snapshot error: "+format, a...)
	}
	var mb struct {
		BackendType string `json:"backend_type"`
		BackendPath string `json:"backend_path"`
	}
	memPath := str(obj, "mem_file_path")
	if has(obj, "mem_backend") {
		if err := json.Unmarshal(obj["mem_backend"], &mb); err != nil || mb.BackendPath == "" {
			return nil, bad("An error occurred when deserializing the json body of a request: mem_backend needs backend_type and backend_path.")
		}
		if mb.BackendType != "File" {
			return nil, fail("stand-in: only File memory backends are emulated")
		}
		memPath = mb.BackendPath
	}
	memPath = s.resolve(memPath)
	if err := readable(memPath); err != nil {
		return nil, fail("cannot open the memory file: %v", err)
	}
	statePath := s.resolve(str(obj, "snapshot_path"))
	b, err := os.ReadFile(statePath)
	if err != nil {
		return nil, fail("cannot open the snapshot file: %v", err)
	}
	var p pointer
	if err := json.Unmarshal(b, &p); err != nil || p.StandIn == "" {
		return nil, fail("the snapshot file is not a stand-in snapshot")
	}
	if p.StandIn != Version {
		return nil, fail("snapshot format of %s, this is %s", p.StandIn, Version)
	}
	nics := p.NICs
	if has(obj, "network_overrides") {
		var ov []struct {
			IfaceID     string `json:"iface_id"`
			HostDevName string `json:"host_dev_name"`
		}
		if err := json.Unmarshal(obj["network_overrides"], &ov); err != nil {
			return nil, bad("An error occurred when deserializing the json body of a request: network_overrides: %v", err)
		}
		for _, o := range ov {
			found := false
			for i := range nics {
				if nics[i].ID == o.IfaceID {
					nics[i].TAP, found = o.HostDevName, true
				}
			}
			if !found {
				return nil, fail("network override for unknown interface %q", o.IfaceID)
			}
		}
	}
	vsockPath := p.VsockPath
	if has(obj, "vsock_override") {
		var vo struct {
			UDSPath string `json:"uds_path"`
		}
		if err := json.Unmarshal(obj["vsock_override"], &vo); err != nil || vo.UDSPath == "" {
			return nil, bad("An error occurred when deserializing the json body of a request: vsock_override needs uds_path.")
		}
		vsockPath = vo.UDSPath
	}
	// Paths in the state are resolved by the loading process.
	drives := append([]Drive(nil), p.Drives...)
	for i := range drives {
		drives[i].Path = s.resolve(drives[i].Given)
		if err := readable(drives[i].Path); err != nil {
			return nil, fail("drive %s: %v", drives[i].ID, err)
		}
	}
	var ln net.Listener
	if vsockPath != "" {
		if ln, err = net.Listen("unix", s.resolve(vsockPath)); err != nil {
			return nil, fail("vsock: UnixBind(%v)", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g, err := s.Load(ctx, LoadConfig{
		ID: s.cfg.ID, Saved: memPath,
		SerialOut: s.cfg.SerialOut, NICs: nics, Drives: drives, AgentPort: p.AgentPort,
	})
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, fail("%v", err)
	}
	s.guest, s.started, s.drives, s.nics = g, true, drives, nics
	s.cfg.VsockCID, s.cfg.VsockPath = p.VsockCID, vsockPath
	if ln != nil {
		s.vsock = ln
		go s.acceptVsock(ln)
	}
	go func() {
		<-g.Done()
		s.Log.Info("guest stopped; exiting")
		s.quit()
	}()
	// Firecracker saves only paused VMs, so the guest arrives paused, and
	// stays so unless resume_vm says otherwise, as on Firecracker.
	s.paused = true
	if boolean(obj, "resume_vm") {
		if err := g.Resume(ctx); err != nil {
			return nil, fail("resume after load: %v", err)
		}
		s.paused = false
	}
	return nil, nil
}
