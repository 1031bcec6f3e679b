package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/dockerapi"
)

// Docker-backend VMs (containers) join an mvm network through a Docker
// network of its own, made on the first Docker attach: a bridge network
// whose embedded DNS resolves the VMs' names (the backend gives every
// container the aliases "<vm>" and "<vm>.<network>"), internal when the
// mvm network is. Docker picks its subnet from its own address pools; the
// record's subnet belongs to our bridge for QEMU VMs, and a Docker network
// overlapping one of our bridged subnets is refused.

// ModeDocker is the mode recorded for a container's place on a network
// (store.NetInfo.Mode): Docker, not we, addresses and wires it.
const ModeDocker = "docker"

// Labels on the Docker networks we make. LabelShare is the hash of the
// share directory, so two state roots never adopt each other's networks.
const (
	DockerLabelManaged = "mvm.managed"
	DockerLabelNetwork = "mvm.network"
	DockerLabelShare   = "mvm.share"
)

// dockerCallTimeout bounds each Engine API call; a local daemon answers
// network calls in well under a second.
const dockerCallTimeout = 20 * time.Second

// dockerNetwork is the part of GET /networks/{id} that we read.
type dockerNetwork struct {
	ID       string            `json:"Id"`
	Name     string            `json:"Name"`
	Driver   string            `json:"Driver"`
	Internal bool              `json:"Internal"`
	Labels   map[string]string `json:"Labels"`
	IPAM     struct {
		Config []struct {
			Subnet  string `json:"Subnet"`
			Gateway string `json:"Gateway"`
		} `json:"Config"`
	} `json:"IPAM"`
	Containers map[string]struct {
		Name string `json:"Name"`
	} `json:"Containers"`
}

// dockerNetworkCreate is the body of POST /networks/create.
type dockerNetworkCreate struct {
	Name           string            `json:"Name"`
	CheckDuplicate bool              `json:"CheckDuplicate"`
	Driver         string            `json:"Driver"`
	Internal       bool              `json:"Internal"`
	Labels         map[string]string `json:"Labels"`
}

// shareTag is 6 hex digits of the share directory's hash.
func (m *Manager) shareTag() string {
	h := sha256.Sum256([]byte(filepath.Clean(filepath.Dir(m.Store.Dir()))))
	return hex.EncodeToString(h[:3])
}

// DockerNetworkName is the Docker network of mvm network name, e.g.
// "mvm-lab-1a2b3c"; the share directory's hash keeps state roots apart.
func (m *Manager) DockerNetworkName(name string) string {
	return "mvm-" + name + "-" + m.shareTag()
}

func (m *Manager) dockerClient() (*dockerapi.Client, error) {
	if m.Docker != nil {
		return m.Docker, nil
	}
	c, err := dockerapi.New()
	if err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	m.Docker = c
	return c, nil
}

// ours reports whether a Docker network was made by us for n.
func (m *Manager) ours(d *dockerNetwork, n *Network) bool {
	return d.Labels[DockerLabelManaged] == "1" && d.Labels[DockerLabelNetwork] == n.Name && d.Labels[DockerLabelShare] == m.shareTag()
}

// inspectDockerNetwork returns the Docker network ref (ID or name), or
// nil when there is none.
func inspectDockerNetwork(ctx context.Context, c *dockerapi.Client, ref string) (*dockerNetwork, error) {
	ctx, cancel := context.WithTimeout(ctx, dockerCallTimeout)
	defer cancel()
	var d dockerNetwork
	err := c.Do(ctx, http.MethodGet, "/networks/"+url.PathEscape(ref), nil, nil, "", &d)
	if dockerapi.IsStatus(err, http.StatusNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inspect docker network %s: %w", ref, err)
	}
	return &d, nil
}

func deleteDockerNetwork(ctx context.Context, c *dockerapi.Client, ref string) error {
	ctx, cancel := context.WithTimeout(ctx, dockerCallTimeout)
	defer cancel()
	err := c.Do(ctx, http.MethodDelete, "/networks/"+url.PathEscape(ref), nil, nil, "", nil)
	if err == nil || dockerapi.IsStatus(err, http.StatusNotFound) {
		return nil
	}
	return err
}

// containerNames lists the containers on a Docker network, sorted.
func (d *dockerNetwork) containerNames() []string {
	var names []string
	for id, c := range d.Containers {
		if c.Name != "" {
			names = append(names, c.Name)
		} else {
			names = append(names, id)
		}
	}
	sort.Strings(names)
	return names
}

// ensureDockerNetwork makes n's Docker network exist and records its name
// and ID on n (not in the store: the caller, who holds n's lock, writes n).
// An existing network of ours is reused; one left by a crash between its
// creation and the record update is adopted.
func (m *Manager) ensureDockerNetwork(ctx context.Context, n *Network) error {
	c, err := m.dockerClient()
	if err != nil {
		return err
	}
	if n.DockerName == "" {
		n.DockerName = m.DockerNetworkName(n.Name)
	}
	for _, ref := range []string{n.DockerID, n.DockerName} {
		if ref == "" {
			continue
		}
		d, err := inspectDockerNetwork(ctx, c, ref)
		if err != nil {
			return fmt.Errorf("network %s: %w", n.Name, err)
		}
		if d == nil {
			continue
		}
		if !m.ours(d, n) {
			return fmt.Errorf("network %s: docker network %s exists but was not made by mvm for it (labels %v); remove or rename it", n.Name, d.Name, d.Labels)
		}
		if d.Internal != n.Internal {
			if len(d.Containers) > 0 {
				return fmt.Errorf("network %s: docker network %s has internal=%v, the network internal=%v, and containers attached (%s); remove them first",
					n.Name, d.Name, d.Internal, n.Internal, strings.Join(d.containerNames(), ", "))
			}
			m.Log.Debug("replacing docker network of the wrong kind", "network", n.Name, "docker_network", d.Name)
			if err := deleteDockerNetwork(ctx, c, d.ID); err != nil {
				return fmt.Errorf("network %s: remove stale docker network %s: %w", n.Name, d.Name, err)
			}
			break
		}
		n.DockerID, n.DockerName = d.ID, d.Name
		return nil
	}
	return m.createDockerNetwork(ctx, c, n)
}

func (m *Manager) createDockerNetwork(ctx context.Context, c *dockerapi.Client, n *Network) error {
	body := dockerNetworkCreate{
		Name: n.DockerName, CheckDuplicate: true, Driver: "bridge", Internal: n.Internal,
		Labels: map[string]string{DockerLabelManaged: "1", DockerLabelNetwork: n.Name, DockerLabelShare: m.shareTag()},
	}
	var out struct {
		ID      string `json:"Id"`
		Warning string `json:"Warning"`
	}
	cctx, cancel := context.WithTimeout(ctx, dockerCallTimeout)
	err := c.DoJSON(cctx, http.MethodPost, "/networks/create", nil, body, &out)
	cancel()
	if err != nil {
		return fmt.Errorf("network %s: create docker network %s: %w", n.Name, n.DockerName, err)
	}
	if out.Warning != "" {
		m.Log.Warn("docker network created with a warning", "network", n.Name, "docker_network", n.DockerName, "warning", out.Warning)
	}
	// Docker chose the subnet; it must not be one of our bridges'.
	d, err := inspectDockerNetwork(ctx, c, out.ID)
	if err == nil && d == nil {
		err = fmt.Errorf("docker network %s vanished right after its creation", n.DockerName)
	}
	if err == nil {
		err = m.checkDockerSubnets(n, d)
	}
	if err != nil {
		_ = deleteDockerNetwork(context.WithoutCancel(ctx), c, out.ID)
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	n.DockerID = out.ID
	m.Log.Debug("docker network created", "network", n.Name, "docker_network", n.DockerName, "id", out.ID)
	return nil
}

// checkDockerSubnets refuses a Docker network whose subnet overlaps one of
// our bridged networks.
func (m *Manager) checkDockerSubnets(n *Network, d *dockerNetwork) error {
	nets, _ := m.Store.List()
	for _, cfg := range d.IPAM.Config {
		p, err := netip.ParsePrefix(cfg.Subnet)
		if err != nil {
			continue // an IPv6 or odd entry: nothing of ours to collide with
		}
		for _, o := range nets {
			if o.Mode != ModeBridge {
				continue
			}
			q, err := netip.ParsePrefix(o.Subnet)
			if err == nil && overlaps(p, q) {
				return fmt.Errorf("docker gave network %s the subnet %s, which overlaps network %s (%s); set Docker's default-address-pools (daemon.json) to ranges outside ours",
					d.Name, p, o.Name, o.Subnet)
			}
		}
	}
	return nil
}

// removeDockerNetwork removes n's Docker network, if it has one. Refused
// (ErrInUse) while containers are on it; a network already gone is fine,
// and so is a host without a Docker daemon socket at all (warned: the
// daemon, if it comes back, still has the network).
func (m *Manager) removeDockerNetwork(ctx context.Context, n *Network) error {
	if n.DockerID == "" && n.DockerName == "" {
		return nil
	}
	c, err := m.dockerClient()
	if err != nil {
		return fmt.Errorf("network %s: remove its docker network: %w", n.Name, err)
	}
	seen := map[string]bool{}
	for _, ref := range []string{n.DockerID, n.DockerName} {
		if ref == "" {
			continue
		}
		d, err := inspectDockerNetwork(ctx, c, ref)
		if errors.Is(err, os.ErrNotExist) {
			m.Log.Warn("no docker daemon socket; leaving the docker network to it", "network", n.Name, "docker_network", n.DockerName, "socket", c.Sock)
			return nil
		}
		if err != nil {
			return fmt.Errorf("network %s: %w", n.Name, err)
		}
		if d == nil || seen[d.ID] {
			continue
		}
		seen[d.ID] = true
		if !m.ours(d, n) {
			continue // a name taken by someone else: not ours to remove
		}
		if len(d.Containers) > 0 {
			return fmt.Errorf("%w: docker network %s of network %s has containers attached: %s (remove them first)",
				ErrInUse, d.Name, n.Name, strings.Join(d.containerNames(), ", "))
		}
		if err := deleteDockerNetwork(ctx, c, d.ID); err != nil {
			if dockerapi.IsStatus(err, http.StatusForbidden) || dockerapi.IsStatus(err, http.StatusConflict) {
				return fmt.Errorf("%w: docker network %s of network %s: %v", ErrInUse, d.Name, n.Name, err)
			}
			return fmt.Errorf("network %s: remove docker network %s: %w", n.Name, d.Name, err)
		}
		m.Log.Debug("docker network removed", "network", n.Name, "docker_network", d.Name)
	}
	return nil
}

// AttachDocker gives container vm its place on network name (creating the
// default network on first use, like Attach): the network's Docker network,
// made if needed, and the ports published for the VM's lifetime. Docker
// assigns the address and MAC when the container starts; SetAddress records
// them. The returned lease's Network.DockerName is what to join.
func (m *Manager) AttachDocker(ctx context.Context, name, vm string, ports []Port) (*Lease, error) {
	n, unlock, err := m.openForAttach(ctx, name, vm, ports)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Never silently open: a policy the Docker backend cannot enforce is
	// refused.
	if !egressOpen(n.Egress) {
		return nil, fmt.Errorf("network %s has egress policy %s, which the docker backend cannot enforce (containers use Docker's own NAT); use --backend qemu, or 'mvmctl network update %s --egress open'", name, n.Egress.Describe(), name)
	}
	a := n.Attached[vm]
	if a == nil {
		a = &Attachment{VM: vm}
		n.Attached[vm] = a
	}
	a.Ports = ports
	if n.DockerName == "" {
		n.DockerName = m.DockerNetworkName(name)
	}
	// Record first, then make the Docker network (as with TAPs).
	if err := m.Store.Put(n); err != nil {
		return nil, err
	}
	if err := m.ensureDockerNetwork(ctx, n); err != nil {
		return nil, err
	}
	if err := m.Store.Put(n); err != nil {
		return nil, err
	}
	return &Lease{Network: n, Attach: a}, nil
}

// SetAddress records the address and MAC Docker gave container vm on
// network name.
func (m *Manager) SetAddress(name, vm, ip, mac string) error {
	unlock, err := m.Store.Lock(name)
	if err != nil {
		return err
	}
	defer unlock()
	n, err := m.Store.Get(name)
	if err != nil {
		return err
	}
	a := n.Attached[vm]
	if a == nil {
		return fmt.Errorf("network %s: VM %s is not attached", name, vm)
	}
	a.IP, a.MAC = ip, mac
	return m.Store.Put(n)
}
