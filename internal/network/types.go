// Package network gives VMs real networks: records of named networks with
// their subnets and the VMs attached to them (addresses and MACs allocated
// under the network's lock, never by DHCP), and the host plumbing that makes
// them work: a bridge, a TAP per NIC, nftables rules in a table of our own,
// a DNS server for VM names. Unprivileged hosts get user-mode networking
// (QEMU's user stack) instead, which reaches out but not across VMs.
package network

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Modes of a network.
const (
	// ModeBridge: a host bridge, a TAP per VM, NAT out of the uplink.
	// Needs root or CAP_NET_ADMIN.
	ModeBridge = "bridge"
	// ModeUser: the VMM's own user-mode stack; no privileges, no VM-to-VM.
	ModeUser = "user"
	// ModeNone is not a network: a VM asked for --network none gets no NIC.
	ModeNone = "none"
)

// DefaultName is the network VMs join when none is named; it is created on
// first use.
const DefaultName = "default"

// Network is one network's record, <share>/networks/<name>.json.
type Network struct {
	Name     string    `json:"name"`
	Mode     string    `json:"mode"`
	Subnet   string    `json:"subnet"`  // CIDR, e.g. 10.88.0.0/24
	Gateway  string    `json:"gateway"` // the host's address on the bridge (DNS lives here)
	Bridge   string    `json:"bridge,omitempty"`
	Internal bool      `json:"internal,omitempty"` // no route out at all
	MTU      int       `json:"mtu,omitempty"`
	Created  time.Time `json:"created"`
	// Attached maps VM name to its place on the network.
	Attached map[string]*Attachment `json:"attached,omitempty"`
	// Egress is the outbound policy; nil is "open".
	Egress *Egress `json:"egress,omitempty"`
	// Backend-specific state, e.g. the Docker network's ID.
	DockerID string `json:"docker_id,omitempty"`
	// DockerName is the Docker network that Docker-backend VMs of this
	// network join (docker.go); set before the Docker network is created,
	// so a crash in between leaves a record naming it, never a stray one.
	DockerName string `json:"docker_name,omitempty"`
}

// Attachment is one VM's NIC on a network.
type Attachment struct {
	VM  string `json:"vm"`
	IP  string `json:"ip"`
	MAC string `json:"mac"`
	TAP string `json:"tap,omitempty"` // bridge mode only
	// Ports published on the host for this VM's lifetime.
	Ports []Port `json:"ports,omitempty"`
}

// Port is one published port: HostIP:HostPort on the host to GuestPort in
// the VM.
type Port struct {
	HostIP    string `json:"host_ip"`
	HostPort  int    `json:"host_port"`
	GuestPort int    `json:"guest_port"`
	Proto     string `json:"proto"` // tcp or udp
}

// Spec is the canonical -p form, which ParsePort reads back.
func (p Port) Spec() string {
	host := p.HostIP
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("%s:%d:%d/%s", host, p.HostPort, p.GuestPort, p.Proto)
}

func (p Port) String() string {
	return fmt.Sprintf("%s:%d->%d/%s", p.HostIP, p.HostPort, p.GuestPort, p.Proto)
}

// ParsePort parses -p's [IP:]HOSTPORT:GUESTPORT[/udp|/tcp]. The host side
// defaults to 127.0.0.1: publishing on every interface must be asked for
// (0.0.0.0:8080:80), never a surprise.
func ParsePort(s string) (Port, error) {
	p := Port{HostIP: "127.0.0.1", Proto: "tcp"}
	spec := s
	if i := strings.LastIndexByte(spec, '/'); i >= 0 {
		p.Proto = spec[i+1:]
		spec = spec[:i]
		if p.Proto != "tcp" && p.Proto != "udp" {
			return Port{}, fmt.Errorf("publish %q: protocol %q: use tcp or udp", s, p.Proto)
		}
	}
	parts := strings.Split(spec, ":")
	var host, hp, gp string
	switch len(parts) {
	case 2:
		hp, gp = parts[0], parts[1]
	case 3:
		host, hp, gp = parts[0], parts[1], parts[2]
	default:
		// [v6]:host:guest
		if i := strings.LastIndex(spec, "]:"); strings.HasPrefix(spec, "[") && i > 0 {
			host = spec[1:i]
			rest := strings.Split(spec[i+2:], ":")
			if len(rest) == 2 {
				hp, gp = rest[0], rest[1]
				break
			}
		}
		return Port{}, fmt.Errorf("publish %q: want [IP:]HOSTPORT:GUESTPORT[/udp]", s)
	}
	if host != "" {
		a, err := netip.ParseAddr(strings.Trim(host, "[]"))
		if err != nil {
			return Port{}, fmt.Errorf("publish %q: host address %q is not an IP address", s, host)
		}
		p.HostIP = a.String()
	}
	var err error
	if p.HostPort, err = portNumber(hp); err != nil {
		return Port{}, fmt.Errorf("publish %q: host port: %w", s, err)
	}
	if p.GuestPort, err = portNumber(gp); err != nil {
		return Port{}, fmt.Errorf("publish %q: guest port: %w", s, err)
	}
	return p, nil
}

func portNumber(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return n, nil
}

var (
	// ErrNotFound is returned for a network with no record.
	ErrNotFound = errors.New("no such network")
	// ErrExists is returned when creating a network whose name is taken.
	ErrExists = errors.New("network already exists")
	// ErrInUse is returned when removing a network VMs are attached to.
	ErrInUse = errors.New("network in use")
)

// VMNames lists the attached VMs, sorted.
func (n *Network) VMNames() []string {
	names := make([]string, 0, len(n.Attached))
	for k := range n.Attached {
		names = append(names, k)
	}
	sortStrings(names)
	return names
}
