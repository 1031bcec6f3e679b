package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/dockerapi"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// User-mode addressing: every VM has its own user-mode stack, so all of
// them use the same well-known addresses.
const (
	UserSubnet  = "10.0.2.0/24"
	UserGateway = "10.0.2.2"
	UserDNS     = "10.0.2.3"
	UserGuestIP = "10.0.2.15"
)

// Manager creates networks and attaches VMs to them.
type Manager struct {
	Store *Store
	// RunDir holds runtime files (DNS server pid and log): <state>/networks.
	RunDir string
	// Table is our nftables table; one per share directory, so two users'
	// (or two test runs') networks never rewrite each other's rules.
	Table string
	Log   *slog.Logger
	// Privileged reports whether bridged networking is possible here.
	Privileged func() bool
	// StartDNS starts the network's DNS server in the background (the CLI
	// re-executes itself); nil starts none.
	StartDNS func(n *Network) error
	// Docker is the Engine API client for networks that Docker-backend VMs
	// join (docker.go); nil uses $DOCKER_HOST's daemon, asked only when a
	// network has a Docker side.
	Docker *dockerapi.Client
}

// NewManager returns a manager for the share dir's networks.
func NewManager(shareDir, stateDir string, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.Default()
	}
	h := sha256.Sum256([]byte(filepath.Clean(shareDir)))
	return &Manager{
		Store:      NewStore(filepath.Join(shareDir, "networks")),
		RunDir:     filepath.Join(stateDir, "networks"),
		Table:      "mvm-" + hex.EncodeToString(h[:])[:8],
		Log:        log,
		Privileged: Privileged,
	}
}

// CreateOptions are `network create`'s inputs.
type CreateOptions struct {
	Name     string
	Subnet   string // "" picks a free /24
	Mode     string // "" picks bridge when privileged, else user
	Internal bool
	Egress   *Egress // nil: open
}

// Create makes a new network record and, for bridge mode, its bridge and rules.
func (m *Manager) Create(ctx context.Context, o CreateOptions) (*Network, error) {
	if err := ValidateName(o.Name); err != nil {
		return nil, err
	}
	unlock, err := m.Store.Lock(o.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if m.Store.Exists(o.Name) {
		return nil, fmt.Errorf("%w: %q (see 'mvmctl network inspect %s')", ErrExists, o.Name, o.Name)
	}
	n, err := m.newRecord(o)
	if err != nil {
		return nil, err
	}
	if err := m.Store.Put(n); err != nil {
		return nil, err
	}
	if n.Mode == ModeBridge {
		if err := m.plumb(ctx, n); err != nil {
			// Leave nothing half-made: no record, no bridge.
			_ = m.Store.Remove(n.Name)
			_ = deleteLink(n.Bridge)
			_ = m.applyFirewall()
			return nil, err
		}
	}
	m.Log.Debug("network created", "network", n.Name, "mode", n.Mode, "subnet", n.Subnet)
	return n, nil
}

func (m *Manager) newRecord(o CreateOptions) (*Network, error) {
	mode := o.Mode
	priv := m.Privileged != nil && m.Privileged()
	switch mode {
	case "":
		mode = ModeUser
		if priv {
			mode = ModeBridge
		}
	case ModeBridge:
		if !priv {
			return nil, fmt.Errorf("network %s: bridge mode needs root or CAP_NET_ADMIN; use --mode user (no VM-to-VM traffic) or run as root", o.Name)
		}
	case ModeUser:
	default:
		return nil, fmt.Errorf("network %s: unknown mode %q: use bridge or user", o.Name, mode)
	}
	n := &Network{Name: o.Name, Mode: mode, Internal: o.Internal, Created: time.Now().UTC(), Attached: map[string]*Attachment{}}
	if o.Egress != nil {
		if _, err := o.Egress.Compile(); err != nil {
			return nil, fmt.Errorf("network %s: %w", o.Name, err)
		}
		if mode == ModeUser && o.Egress.Preset != EgressOpen {
			return nil, fmt.Errorf("network %s: user mode cannot enforce an egress policy (the VMM's own NAT reaches everything); use a bridged network (as root) for --egress %s", o.Name, o.Egress.Preset)
		}
		n.Egress = o.Egress
	}
	if mode == ModeUser {
		if o.Subnet != "" {
			return nil, fmt.Errorf("network %s: --subnet applies to bridge mode only (user mode always uses %s)", o.Name, UserSubnet)
		}
		n.Subnet, n.Gateway = UserSubnet, UserGateway
		return n, nil
	}
	taken, err := m.occupied(o.Name)
	if err != nil {
		return nil, err
	}
	var p netip.Prefix
	if o.Subnet != "" {
		p, err = checkSubnet(o.Subnet, taken)
	} else {
		p, err = pickSubnet(taken)
	}
	if err != nil {
		return nil, err
	}
	n.Subnet, n.Gateway = p.String(), gatewayOf(p).String()
	n.Bridge = linkName('b', m.Store.Dir(), o.Name)
	n.MTU = uplinkMTU()
	return n, nil
}

// occupied is every prefix a new network must not overlap: the host's
// routes and addresses and our other networks.
func (m *Manager) occupied(except string) ([]Occupied, error) {
	nets, _ := m.Store.List()
	taken, err := hostOccupied(ownBridges(nets))
	if err != nil {
		return nil, err
	}
	for _, n := range nets {
		if n.Name == except || n.Mode != ModeBridge {
			continue
		}
		if p, err := netip.ParsePrefix(n.Subnet); err == nil {
			taken = append(taken, Occupied{Prefix: p, By: "network " + n.Name})
		}
	}
	return taken, nil
}

// ownBridges is the set of bridge names this state dir's networks use.
func ownBridges(nets []*Network) map[string]bool {
	own := map[string]bool{}
	for _, n := range nets {
		if n.Bridge != "" {
			own[n.Bridge] = true
		}
	}
	return own
}

// plumb makes a bridged network's host side exist: bridge, rules, DNS.
func (m *Manager) plumb(ctx context.Context, n *Network) error {
	if err := ensureBridge(n); err != nil {
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	if err := m.applyFirewall(); err != nil {
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	if m.StartDNS != nil && !m.dnsAlive(n.Name) {
		if err := m.StartDNS(n); err != nil {
			return fmt.Errorf("network %s: start DNS server: %w", n.Name, err)
		}
	}
	return nil
}

func (m *Manager) applyFirewall() error {
	nets, err := m.Store.List()
	if err != nil {
		return fmt.Errorf("firewall: %w", err)
	}
	return applyFirewall(m.Table, nets)
}

// Lease is one VM's place on a network, as the boot path needs it.
type Lease struct {
	Network *Network
	Attach  *Attachment
}

// Guest is the NIC config the agent applies.
func (l *Lease) Guest() *guestcfg.Network {
	n, a := l.Network, l.Attach
	p := netip.MustParsePrefix(n.Subnet)
	ifc := guestcfg.Interface{MAC: a.MAC, Address: fmt.Sprintf("%s/%d", a.IP, p.Bits()), MTU: n.MTU}
	g := &guestcfg.Network{Interfaces: []guestcfg.Interface{ifc}}
	switch n.Mode {
	case ModeUser:
		g.Interfaces[0].Gateway = UserGateway
		g.DNS = []string{UserDNS}
	default:
		if !n.Internal {
			g.Interfaces[0].Gateway = n.Gateway
		}
		g.DNS = []string{n.Gateway}
		g.Search = []string{n.Name}
	}
	g.Hosts = []guestcfg.HostEntry{{IP: a.IP, Names: []string{a.VM + "." + n.Name, a.VM}}}
	return g
}

// UserLease is the lease of a VM on ad-hoc user-mode networking
// (--network user): no record, the fixed user-mode addresses.
func UserLease(vm string, ports []Port) *Lease {
	n := &Network{Name: ModeUser, Mode: ModeUser, Subnet: UserSubnet, Gateway: UserGateway}
	a := &Attachment{VM: vm, IP: UserGuestIP, MAC: vmMAC(n, vm), Ports: ports}
	return &Lease{Network: n, Attach: a}
}

// Attach gives vm a place on network name (creating the default network on
// first use): an address, a MAC and, in bridge mode, a TAP; ports are
// published for the VM's lifetime. Attaching again returns the existing
// lease with the new ports.
func (m *Manager) Attach(ctx context.Context, name, vm string, ports []Port) (*Lease, error) {
	if name == ModeUser {
		return UserLease(vm, ports), nil
	}
	n, unlock, err := m.openForAttach(ctx, name, vm, ports)
	if err != nil {
		return nil, err
	}
	defer unlock()
	a := n.Attached[vm]
	if a == nil {
		a = &Attachment{VM: vm, MAC: vmMAC(n, vm)}
		if n.Mode == ModeUser {
			a.IP = UserGuestIP
		} else {
			ip, err := allocIP(n)
			if err != nil {
				return nil, err
			}
			a.IP = ip.String()
			a.TAP = linkName('t', m.Store.Dir(), name, vm)
		}
		n.Attached[vm] = a
	}
	a.Ports = ports
	// Record first, then make links: a crash in between leaves a record
	// naming a TAP that Detach deletes, never a TAP no record names.
	if err := m.Store.Put(n); err != nil {
		return nil, err
	}
	if n.Mode == ModeBridge {
		if err := m.plumb(ctx, n); err != nil {
			return nil, err
		}
		if err := ensureTAP(n, a); err != nil {
			return nil, fmt.Errorf("network %s: %w", name, err)
		}
	}
	return &Lease{Network: n, Attach: a}, nil
}

// openForAttach is the first step of every attach: the network's record
// (the default network made on first use), read under its lock, with vm's
// ports checked against the other VMs'. The caller must call unlock.
func (m *Manager) openForAttach(ctx context.Context, name, vm string, ports []Port) (*Network, func(), error) {
	if err := ValidateName(name); err != nil {
		return nil, nil, err
	}
	if name == DefaultName && !m.Store.Exists(name) {
		if _, err := m.Create(ctx, CreateOptions{Name: DefaultName}); err != nil && !errors.Is(err, ErrExists) {
			return nil, nil, fmt.Errorf("create the default network: %w", err)
		}
	}
	unlock, err := m.Store.Lock(name)
	if err != nil {
		return nil, nil, err
	}
	n, err := m.Store.Get(name)
	if err == nil {
		err = checkPortClash(n, vm, ports)
	}
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return n, unlock, nil
}

// checkPortClash refuses a host port another VM of the network publishes.
func checkPortClash(n *Network, vm string, ports []Port) error {
	for _, p := range ports {
		for other, a := range n.Attached {
			if other == vm {
				continue
			}
			for _, q := range a.Ports {
				if q.HostPort == p.HostPort && q.Proto == p.Proto && (q.HostIP == p.HostIP || q.HostIP == "0.0.0.0" || p.HostIP == "0.0.0.0") {
					return fmt.Errorf("publish %s: host port %d/%s is already published by VM %s", p, p.HostPort, p.Proto, other)
				}
			}
		}
	}
	return nil
}

// Detach releases vm's place on network name: its TAP, address and ports.
// A missing network or attachment is fine (rm after a crash).
func (m *Manager) Detach(ctx context.Context, name, vm string) error {
	if name == "" || name == ModeUser || name == ModeNone || !m.Store.Exists(name) {
		return nil
	}
	unlock, err := m.Store.Lock(name)
	if err != nil {
		return err
	}
	defer unlock()
	n, err := m.Store.Get(name)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	a := n.Attached[vm]
	if a == nil {
		return nil
	}
	if a.TAP != "" {
		if err := deleteLink(a.TAP); err != nil {
			return fmt.Errorf("network %s: %w", name, err)
		}
	}
	delete(n.Attached, vm)
	return m.Store.Put(n)
}

// Remove deletes a network, and its Docker network if containers ever
// joined it: refused while VMs are attached (naming them),
// unless force, which is refused too while any of them runs (isRunning).
// Force detaches stopped VMs, which then boot with no network until
// attached again, and says so in the returned notes.
func (m *Manager) Remove(ctx context.Context, name string, force bool, isRunning func(vm string) bool) ([]string, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	unlock, err := m.Store.Lock(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	n, err := m.Store.Get(name)
	if err != nil {
		return nil, err
	}
	var notes []string
	if vms := n.VMNames(); len(vms) > 0 {
		if !force {
			return nil, fmt.Errorf("%w: network %s has VMs attached: %s (remove them first, or 'mvmctl network rm -f %s' to detach stopped ones)",
				ErrInUse, name, strings.Join(vms, ", "), name)
		}
		var running []string
		for _, vm := range vms {
			if isRunning != nil && isRunning(vm) {
				running = append(running, vm)
			}
		}
		if len(running) > 0 {
			return nil, fmt.Errorf("%w: network %s has running VMs: %s (stop them with 'mvmctl down' first; -f never stops a VM)",
				ErrInUse, name, strings.Join(running, ", "))
		}
		for _, vm := range vms {
			if a := n.Attached[vm]; a.TAP != "" {
				if err := deleteLink(a.TAP); err != nil {
					return nil, err
				}
			}
			notes = append(notes, fmt.Sprintf("detached stopped VM %s from %s", vm, name))
		}
	}
	// The Docker network goes first: the daemon refuses while containers
	// are on it, and then the record stays for another try.
	if err := m.removeDockerNetwork(ctx, n); err != nil {
		return nil, err
	}
	m.stopDNS(name)
	if n.Mode == ModeBridge {
		if err := deleteLink(n.Bridge); err != nil {
			return nil, err
		}
	}
	if err := m.Store.Remove(name); err != nil {
		return nil, err
	}
	if n.Mode == ModeBridge {
		if err := m.applyFirewall(); err != nil {
			return notes, err
		}
	}
	return notes, nil
}

// Prune removes every network no VM is attached to, except default.
func (m *Manager) Prune(ctx context.Context) ([]string, error) {
	nets, err := m.Store.List()
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, n := range nets {
		if n.Name == DefaultName || len(n.Attached) > 0 {
			continue
		}
		if _, err := m.Remove(ctx, n.Name, false, nil); err != nil {
			if errors.Is(err, ErrInUse) {
				continue // attached meanwhile
			}
			return removed, err
		}
		removed = append(removed, n.Name)
	}
	return removed, nil
}

// Reconcile detaches VMs whose records are gone (a crash between rm's
// steps) and brings back the host side of bridged networks (after a host
// reboot: bridges, rules and DNS are not persistent).
func (m *Manager) Reconcile(ctx context.Context, vmExists func(string) bool) error {
	nets, err := m.Store.List()
	if err != nil {
		return err
	}
	for _, n := range nets {
		for _, vm := range n.VMNames() {
			if !vmExists(vm) {
				m.Log.Debug("detaching a VM that no longer exists", "network", n.Name, "vm", vm)
				if err := m.Detach(ctx, n.Name, vm); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Get returns a network's record.
func (m *Manager) Get(name string) (*Network, error) { return m.Store.Get(name) }

// List returns every network.
func (m *Manager) List() ([]*Network, error) { return m.Store.List() }

// Privileged reports whether this process may create bridges and TAPs:
// root, or CAP_NET_ADMIN in its effective set.
func Privileged() bool {
	if os.Geteuid() == 0 {
		return true
	}
	return hasCapNetAdmin()
}
