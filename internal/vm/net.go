package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/network"
	"github.com/mvm-dev/mvm/internal/store"
)

// Networks returns the manager of this user's networks. The DNS server of
// a bridged network is this same binary, re-executed in the background.
func (m *Manager) Networks() *network.Manager {
	if m.nets == nil {
		m.nets = network.NewManager(m.Dirs.Share, m.Dirs.State, m.Log)
		m.nets.StartDNS = m.startDNS
	}
	return m.nets
}

// dnsReadyWait bounds how long up waits for a new DNS server to bind.
const dnsReadyWait = 5 * time.Second

// startDNS runs `mvmctl network dns-serve NAME` detached (own session, no
// terminal) and waits until it has bound its port and written its pid file.
func (m *Manager) startDNS(n *network.Network) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	nm := m.Networks()
	if err := os.MkdirAll(nm.RunDir, 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(nm.DNSLogFile(n.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	os.Remove(nm.DNSPidFile(n.Name))
	cmd := exec.Command(exe, "network", "dns-serve", n.Name)
	cmd.Env = os.Environ()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(dnsReadyWait)
	for {
		if nm.DNSRunning(n.Name) {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("DNS server for %s exited (%v); see %s", n.Name, err, nm.DNSLogFile(n.Name))
		case <-deadline:
			return fmt.Errorf("DNS server for %s did not start within %s; see %s", n.Name, dnsReadyWait, nm.DNSLogFile(n.Name))
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// resolveNetwork picks the network for a new VM: flag, then config.toml,
// then "default".
func resolveNetwork(o UpOptions, vc *VMConfig, m *Manager) string {
	switch {
	case o.Network != "":
		return o.Network
	case vc != nil && vc.Network != "":
		return vc.Network
	case m.Config.DefaultNetwork != "":
		return m.Config.DefaultNetwork
	}
	return network.DefaultName
}

// planNet validates the network choice and ports of a new VM and records
// them on rec; the allocation happens at boot (attachNet).
func planNet(rec *store.Record, name string, publish []string, be backend.Backend) error {
	if name == network.ModeNone {
		if len(publish) > 0 {
			return errors.New("-p needs a network: a VM on --network none has no NIC")
		}
		return nil
	}
	if name != network.ModeUser {
		if err := network.ValidateName(name); err != nil {
			return err
		}
	}
	if be.Name() == "docker" {
		// The Docker backend attaches containers to Docker's own networks;
		// that parity lands separately. Say so instead of pretending.
		if name != network.DefaultName || len(publish) > 0 {
			return fmt.Errorf("--network %s and -p are not supported on the docker backend yet; use --backend qemu", name)
		}
		return nil
	}
	var specs []string
	for _, s := range publish {
		p, err := network.ParsePort(s)
		if err != nil {
			return err
		}
		specs = append(specs, p.Spec())
	}
	rec.Net = &store.NetInfo{Network: name, Publish: specs}
	return nil
}

// attachNet (re)takes rec's place on its network and fills spec's NIC and
// published ports. It is idempotent: start and restart call it again.
func (m *Manager) attachNet(ctx context.Context, rec *store.Record, spec *backend.Spec) (*network.Lease, error) {
	if rec.Net == nil {
		return nil, nil
	}
	var ports []network.Port
	for _, s := range rec.Net.Publish {
		p, err := network.ParsePort(s)
		if err != nil {
			return nil, fmt.Errorf("VM %s: recorded port %q: %w", rec.Name, s, err)
		}
		ports = append(ports, p)
	}
	lease, err := m.Networks().Attach(ctx, rec.Net.Network, rec.Name, ports)
	if err != nil {
		if errors.Is(err, network.ErrNotFound) {
			return nil, fmt.Errorf("VM %s is on network %s, which no longer exists: %w", rec.Name, rec.Net.Network, err)
		}
		return nil, err
	}
	n, a := lease.Network, lease.Attach
	rec.Net.Mode, rec.Net.IP, rec.Net.MAC = n.Mode, a.IP, a.MAC
	nic := backend.NIC{ID: "net0", MAC: a.MAC, TAP: a.TAP, Network: n.Name, IP: a.IP}
	var pub []backend.Publish
	for _, p := range ports {
		pub = append(pub, backend.Publish{Proto: p.Proto, HostIP: p.HostIP, HostPort: p.HostPort, GuestIP: a.IP, GuestPort: p.GuestPort})
	}
	if n.Mode == network.ModeUser {
		nic.TAP = ""
		nic.User = &backend.UserNet{Subnet: network.UserSubnet, Gateway: network.UserGateway, DNS: network.UserDNS, GuestIP: network.UserGuestIP, Forwards: pub}
	}
	spec.NICs = []backend.NIC{nic}
	spec.Publish = pub
	return lease, nil
}

// detachNet releases rec's network place (rm).
func (m *Manager) detachNet(ctx context.Context, rec *store.Record) error {
	if rec.Net == nil {
		return nil
	}
	return m.Networks().Detach(ctx, rec.Net.Network, rec.Name)
}
