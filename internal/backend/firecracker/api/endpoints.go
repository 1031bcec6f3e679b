package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// Instance is GET /.
func (c *Client) Instance(ctx context.Context) (InstanceInfo, error) {
	var v InstanceInfo
	return v, c.do(ctx, http.MethodGet, "/", nil, &v)
}

// Version is GET /version.
func (c *Client) Version(ctx context.Context) (string, error) {
	var v Version
	if err := c.do(ctx, http.MethodGet, "/version", nil, &v); err != nil {
		return "", err
	}
	if v.FirecrackerVersion == "" {
		return "", fmt.Errorf("firecracker GET /version: no firecracker_version in the answer")
	}
	return v.FirecrackerVersion, nil
}

// MachineConfig is GET /machine-config.
func (c *Client) MachineConfig(ctx context.Context) (MachineConfig, error) {
	var v MachineConfig
	return v, c.do(ctx, http.MethodGet, "/machine-config", nil, &v)
}

// PutMachineConfig is PUT /machine-config (pre-boot).
func (c *Client) PutMachineConfig(ctx context.Context, m MachineConfig) error {
	return c.do(ctx, http.MethodPut, "/machine-config", m, nil)
}

// PutBootSource is PUT /boot-source (pre-boot).
func (c *Client) PutBootSource(ctx context.Context, b BootSource) error {
	return c.do(ctx, http.MethodPut, "/boot-source", b, nil)
}

// PutDrive is PUT /drives/{drive_id} (pre-boot).
func (c *Client) PutDrive(ctx context.Context, d Drive) error {
	if err := CheckID(d.DriveID); err != nil {
		return fmt.Errorf("drive: %w", err)
	}
	return c.do(ctx, http.MethodPut, "/drives/"+url.PathEscape(d.DriveID), d, nil)
}

// PutNetworkInterface is PUT /network-interfaces/{iface_id} (pre-boot).
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	if err := CheckID(n.IfaceID); err != nil {
		return fmt.Errorf("network interface: %w", err)
	}
	return c.do(ctx, http.MethodPut, "/network-interfaces/"+url.PathEscape(n.IfaceID), n, nil)
}

// PutVsock is PUT /vsock (pre-boot; uds_path must not exist).
func (c *Client) PutVsock(ctx context.Context, v Vsock) error {
	return c.do(ctx, http.MethodPut, "/vsock", v, nil)
}

// PutEntropy is PUT /entropy (pre-boot).
func (c *Client) PutEntropy(ctx context.Context, e Entropy) error {
	return c.do(ctx, http.MethodPut, "/entropy", e, nil)
}

// PutSerial is PUT /serial (pre-boot, 1.14+).
func (c *Client) PutSerial(ctx context.Context, s Serial) error {
	return c.do(ctx, http.MethodPut, "/serial", s, nil)
}

// PutLogger is PUT /logger (pre-boot).
func (c *Client) PutLogger(ctx context.Context, l Logger) error {
	return c.do(ctx, http.MethodPut, "/logger", l, nil)
}

// Action is PUT /actions.
func (c *Client) Action(ctx context.Context, actionType string) error {
	return c.do(ctx, http.MethodPut, "/actions", Action{ActionType: actionType}, nil)
}

// Start boots the configured VM (InstanceStart).
func (c *Client) Start(ctx context.Context) error { return c.Action(ctx, ActionInstanceStart) }

// SendCtrlAltDel asks an x86_64 guest to reboot, which ends Firecracker.
func (c *Client) SendCtrlAltDel(ctx context.Context) error {
	return c.Action(ctx, ActionSendCtrlAltDel)
}

// Pause is PATCH /vm Paused.
func (c *Client) Pause(ctx context.Context) error {
	return c.do(ctx, http.MethodPatch, "/vm", VMState{State: VMPaused}, nil)
}

// Resume is PATCH /vm Resumed.
func (c *Client) Resume(ctx context.Context) error {
	return c.do(ctx, http.MethodPatch, "/vm", VMState{State: VMResumed}, nil)
}

// CreateSnapshot is PUT /snapshot/create (the VM must be paused).
func (c *Client) CreateSnapshot(ctx context.Context, s SnapshotCreate) error {
	return c.do(ctx, http.MethodPut, "/snapshot/create", s, nil)
}

// LoadSnapshot is PUT /snapshot/load. A failure ends the Firecracker
// process; start a new one to retry.
func (c *Client) LoadSnapshot(ctx context.Context, s SnapshotLoad) error {
	return c.do(ctx, http.MethodPut, "/snapshot/load", s, nil)
}

// CheckID applies Firecracker's rule for resource ids in paths: non-empty,
// only ASCII letters, digits and '_'.
func CheckID(id string) error {
	if id == "" {
		return fmt.Errorf("empty id")
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return fmt.Errorf("id %q: only letters, digits and '_' are allowed", id)
		}
	}
	return nil
}
