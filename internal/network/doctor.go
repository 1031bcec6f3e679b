package network

import (
	"fmt"
	"net/netip"
)

// Finding is one networking check for doctor.
type Finding struct {
	Name   string
	OK     bool
	Warn   bool // works, with less
	Detail string
	Fix    string
}

// Diagnose explains what networking can do on this host and why.
func (m *Manager) Diagnose() []Finding {
	var out []Finding
	priv := m.Privileged != nil && m.Privileged()
	if priv {
		out = append(out, Finding{Name: "network mode", OK: true, Detail: "root or CAP_NET_ADMIN: networks are bridges with NAT; VMs reach each other by name"})
	} else {
		out = append(out, Finding{Name: "network mode", Warn: true,
			Detail: "no CAP_NET_ADMIN: networks use QEMU's user-mode stack (egress and -p work, VM-to-VM does not)",
			Fix:    "run as root, or grant CAP_NET_ADMIN, for bridged networks"})
	}
	if !priv {
		return out
	}
	if err := nftablesUsable(); err != nil {
		out = append(out, Finding{Name: "nftables", Detail: err.Error(), Fix: "load nf_tables (modprobe nf_tables); mvm writes its rules through netlink, no nft binary needed"})
	} else {
		out = append(out, Finding{Name: "nftables", OK: true, Detail: "usable; mvm keeps its rules in table inet " + m.Table})
	}
	switch v := readSysctl("net/ipv4/ip_forward"); v {
	case "1":
		out = append(out, Finding{Name: "ip_forward", OK: true, Detail: "IPv4 forwarding is on (needed for NAT out of bridged networks)"})
	default:
		out = append(out, Finding{Name: "ip_forward", Warn: true, Detail: fmt.Sprintf("net.ipv4.ip_forward is %q: mvm turns it on when it creates a non-internal bridged network", v),
			Fix: "sysctl -w net.ipv4.ip_forward=1"})
	}
	if drops, err := dockerForwardDrops(); err == nil && drops {
		if dockerUserChain() {
			out = append(out, Finding{Name: "forward policy", OK: true, Detail: "FORWARD policy is DROP (Docker); mvm adds accepts for its mvm* interfaces to DOCKER-USER and filters in its own table"})
		} else {
			out = append(out, Finding{Name: "forward policy", Detail: "FORWARD policy is DROP and there is no DOCKER-USER chain: forwarded VM traffic is dropped by another firewall",
				Fix: "allow forwarding for interfaces named mvm* in that firewall (iptables -I FORWARD -i mvm+ -j ACCEPT; iptables -I FORWARD -o mvm+ -j ACCEPT)"})
		}
	} else if err == nil {
		out = append(out, Finding{Name: "forward policy", OK: true, Detail: "FORWARD policy accepts; mvm filters in its own table"})
	}
	nets, _ := m.Store.List()
	host, _ := hostOccupied(ownBridges(nets))
	for _, n := range nets {
		if n.Mode != ModeBridge {
			continue
		}
		p, err := netip.ParsePrefix(n.Subnet)
		if err != nil {
			continue
		}
		switch {
		case n.Internal:
			out = append(out, Finding{Name: "egress " + n.Name, OK: true, Detail: "internal: no route out"})
		case n.Egress == nil || n.Egress.Preset == "" || n.Egress.Preset == EgressOpen:
			out = append(out, Finding{Name: "egress " + n.Name, Warn: true, Detail: "egress " + n.Egress.Describe() + ": its VMs reach anything the host reaches",
				Fix: fmt.Sprintf("restrict it: mvmctl network update %s --egress registries (or none, dev, with --allow)", n.Name)})
		default:
			out = append(out, Finding{Name: "egress " + n.Name, OK: true, Detail: "egress " + n.Egress.Describe()})
		}
		if t, bad := conflict(p, host); bad {
			out = append(out, Finding{Name: "subnet " + n.Name, Detail: fmt.Sprintf("network %s (%s) collides with %s (%s), which appeared after it was made", n.Name, n.Subnet, t.Prefix, t.By),
				Fix: fmt.Sprintf("remove its VMs and recreate it: mvmctl network rm %s && mvmctl network create %s", n.Name, n.Name)})
		} else {
			out = append(out, Finding{Name: "subnet " + n.Name, OK: true, Detail: n.Subnet + " collides with nothing on this host"})
		}
	}
	return out
}
