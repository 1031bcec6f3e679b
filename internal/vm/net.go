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
	exe, err := m.mvmctl()
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
	if be.Name() == dockerBackend && name == network.ModeUser {
		return errors.New("--network user is the QEMU backend's user-mode stack; on the docker backend a VM joins a named network (default, or one from 'mvmctl network create')")
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

// dockerBackend is the name of the backend whose VMs are containers on
// Docker networks (internal/backend/docker).
const dockerBackend = "docker"

// attachNet (re)takes rec's place on its network and fills spec's NIC and
// published ports. It is idempotent: start and restart call it again. The
// lease is the guest's NIC config; nil for a container, whose NIC Docker
// configures.
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
	if rec.Backend == dockerBackend {
		return nil, m.attachDocker(ctx, rec, spec, ports)
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

// attachDocker puts a container on its network's Docker network. Docker
// assigns the address when the container starts (recordAddress); until
// then rec keeps the last one it had.
func (m *Manager) attachDocker(ctx context.Context, rec *store.Record, spec *backend.Spec, ports []network.Port) error {
	lease, err := m.Networks().AttachDocker(ctx, rec.Net.Network, rec.Name, ports)
	if err != nil {
		if errors.Is(err, network.ErrNotFound) {
			return fmt.Errorf("VM %s is on network %s, which no longer exists: %w", rec.Name, rec.Net.Network, err)
		}
		return err
	}
	n, a := lease.Network, lease.Attach
	rec.Net.Mode, rec.Net.IP, rec.Net.MAC = network.ModeDocker, a.IP, a.MAC
	var pub []backend.Publish
	for _, p := range ports {
		pub = append(pub, backend.Publish{Proto: p.Proto, HostIP: p.HostIP, HostPort: p.HostPort, GuestPort: p.GuestPort})
	}
	spec.NICs = []backend.NIC{{ID: "net0", Network: n.DockerName}}
	spec.Publish = pub
	return nil
}

// addresser is implemented by handles whose backend, not we, gives the
// guest its address (Docker).
type addresser interface {
	NetAddress(ctx context.Context) (ip, mac string, err error)
}

// addressWait bounds asking the backend for a started VM's address.
const addressWait = 10 * time.Second

// recordAddress records the address and MAC the backend gave a started VM
// on its network, in rec (written by the caller) and in the network's
// record, so ls, inspect and network inspect show them. Failing to learn
// them is logged, not fatal: the VM runs and its name resolves regardless.
func (m *Manager) recordAddress(ctx context.Context, rec *store.Record, h backend.Handle) {
	ad, ok := h.(addresser)
	if rec.Net == nil || !ok {
		return
	}
	actx, cancel := context.WithTimeout(ctx, addressWait)
	ip, mac, err := ad.NetAddress(actx)
	cancel()
	if err == nil {
		err = m.Networks().SetAddress(rec.Net.Network, rec.Name, ip, mac)
	}
	if err != nil {
		m.Log.Warn("could not record the VM's network address", "vm", rec.Name, "network", rec.Net.Network, "err", err)
		return
	}
	rec.Net.IP, rec.Net.MAC = ip, mac
}

// detachNet releases rec's network place (rm).
func (m *Manager) detachNet(ctx context.Context, rec *store.Record) error {
	if rec.Net == nil {
		return nil
	}
	return m.Networks().Detach(ctx, rec.Net.Network, rec.Name)
}
