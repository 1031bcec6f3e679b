package network

import (
	"context"
	_ "embed"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Egress presets. "none": only the network's own VMs and its DNS for VM
// names; "open": everything; the others are name lists in presets.toml.
const (
	EgressNone       = "none"
	EgressRegistries = "registries"
	EgressDev        = "dev"
	EgressOpen       = "open"
)

// Egress is a network's outbound policy: a preset plus allow and deny
// rules. Deny wins over allow; anything else a preset does not name is
// dropped (and counted), except with "open".
type Egress struct {
	Preset string   `json:"preset"`
	Allow  []string `json:"allow,omitempty"` // HOST, *.DOMAIN, CIDR or CIDR:PORT
	Deny   []string `json:"deny,omitempty"`  // CIDR
}

//go:embed presets.toml
var presetsTOML []byte

type presetDef struct {
	Description string   `toml:"description"`
	Include     []string `toml:"include"`
	Names       []string `toml:"names"`
}

var presets = func() map[string]presetDef {
	var m map[string]presetDef
	if err := toml.Unmarshal(presetsTOML, &m); err != nil {
		panic("presets.toml: " + err.Error())
	}
	return m
}()

// PresetNames lists the presets, for help and errors.
func PresetNames() []string { return []string{EgressNone, EgressRegistries, EgressDev, EgressOpen} }

// presetNames returns a preset's names, includes expanded.
func presetNames(p string) []string {
	d, ok := presets[p]
	if !ok {
		return nil
	}
	var out []string
	for _, inc := range d.Include {
		out = append(out, presetNames(inc)...)
	}
	return append(out, d.Names...)
}

// CIDRRule allows a prefix, on one port (TCP and UDP) when Port is set.
type CIDRRule struct {
	Prefix netip.Prefix
	Port   uint16
}

func (r CIDRRule) String() string {
	if r.Port == 0 {
		return r.Prefix.String()
	}
	return r.Prefix.String() + ":" + strconv.Itoa(int(r.Port))
}

// Policy is an Egress compiled for enforcement.
type Policy struct {
	Open      bool
	Hosts     map[string]bool // exact names
	Wildcards []string        // ".debian.org" for "*.debian.org"
	CIDRs     []CIDRRule
	Deny      []netip.Prefix
}

// Compile checks e and returns its policy. An empty preset is "open".
func (e *Egress) Compile() (*Policy, error) {
	p := &Policy{Hosts: map[string]bool{}}
	preset := EgressOpen
	if e != nil && e.Preset != "" {
		preset = e.Preset
	}
	switch preset {
	case EgressOpen:
		p.Open = true
	case EgressNone:
	case EgressRegistries, EgressDev:
		for _, n := range presetNames(preset) {
			if err := p.addName(n); err != nil {
				return nil, fmt.Errorf("preset %s: %w", preset, err)
			}
		}
	default:
		return nil, fmt.Errorf("unknown egress preset %q: use one of %s", preset, strings.Join(PresetNames(), ", "))
	}
	if e == nil {
		return p, nil
	}
	for _, a := range e.Allow {
		if err := p.addAllow(a); err != nil {
			return nil, err
		}
	}
	for _, d := range e.Deny {
		pfx, err := parsePrefix(d)
		if err != nil {
			return nil, fmt.Errorf("--deny %q: want an IPv4 address or CIDR", d)
		}
		p.Deny = append(p.Deny, pfx)
	}
	return p, nil
}

func (p *Policy) addAllow(a string) error {
	if a == "" {
		return fmt.Errorf("--allow: empty rule")
	}
	if c := a[0]; c >= '0' && c <= '9' {
		addr, port := a, ""
		if i := strings.LastIndexByte(a, ':'); i >= 0 {
			addr, port = a[:i], a[i+1:]
		}
		pfx, err := parsePrefix(addr)
		if err != nil {
			return fmt.Errorf("--allow %q: want HOST, *.DOMAIN, CIDR or CIDR:PORT", a)
		}
		r := CIDRRule{Prefix: pfx}
		if port != "" {
			n, err := strconv.Atoi(port)
			if err != nil || n < 1 || n > 65535 {
				return fmt.Errorf("--allow %q: port %q is not 1-65535", a, port)
			}
			r.Port = uint16(n)
		}
		p.CIDRs = append(p.CIDRs, r)
		return nil
	}
	if err := p.addName(a); err != nil {
		return fmt.Errorf("--allow %q: %w", a, err)
	}
	return nil
}

func (p *Policy) addName(n string) error {
	n = strings.ToLower(strings.TrimSuffix(n, "."))
	wild := strings.HasPrefix(n, "*.")
	base := strings.TrimPrefix(n, "*.")
	if !validHostname(base) || !strings.Contains(base, ".") {
		return fmt.Errorf("%q is not a host name or *.domain", n)
	}
	if wild {
		if !slices.Contains(p.Wildcards, "."+base) {
			p.Wildcards = append(p.Wildcards, "."+base)
		}
		return nil
	}
	p.Hosts[base] = true
	return nil
}

func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return netip.Prefix{}, fmt.Errorf("bad prefix %q", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("bad address %q", s)
	}
	return netip.PrefixFrom(a, 32), nil
}

// AllowName reports whether a DNS name (any case, trailing dot or not) may
// be resolved by the network's VMs.
func (p *Policy) AllowName(name string) bool {
	if p.Open {
		return true
	}
	n := strings.ToLower(strings.TrimSuffix(name, "."))
	if p.Hosts[n] {
		return true
	}
	for _, w := range p.Wildcards {
		if strings.HasSuffix(n, w) {
			return true
		}
	}
	return false
}

// Names lists what the policy allows by name, sorted, for inspect.
func (p *Policy) Names() []string {
	var out []string
	for h := range p.Hosts {
		out = append(out, h)
	}
	for _, w := range p.Wildcards {
		out = append(out, "*"+w)
	}
	sort.Strings(out)
	return out
}

// Describe is one line for listings.
func (e *Egress) Describe() string {
	preset := EgressOpen
	if e != nil && e.Preset != "" {
		preset = e.Preset
	}
	s := preset
	if e != nil && len(e.Allow) > 0 {
		s += fmt.Sprintf(" +%d allowed", len(e.Allow))
	}
	if e != nil && len(e.Deny) > 0 {
		s += fmt.Sprintf(" -%d denied", len(e.Deny))
	}
	return s
}

// UpdateOptions change a network's policy; nil fields stay as they are.
type UpdateOptions struct {
	Egress *Egress
}

// Update changes a network's egress policy and applies it at once to every
// VM on it: the rules are rebuilt in one transaction, so new connections
// follow the new policy (established ones finish).
func (m *Manager) Update(ctx context.Context, name string, o UpdateOptions) (*Network, error) {
	unlock, err := m.Store.Lock(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	n, err := m.Store.Get(name)
	if err != nil {
		return nil, err
	}
	if o.Egress != nil {
		if _, err := o.Egress.Compile(); err != nil {
			return nil, fmt.Errorf("network %s: %w", name, err)
		}
		if n.Mode == ModeUser && o.Egress.Preset != EgressOpen {
			return nil, fmt.Errorf("network %s is user mode, which cannot enforce an egress policy; recreate it as a bridged network (as root)", name)
		}
		if !egressOpen(o.Egress) {
			for _, a := range n.Attached {
				if a.TAP == "" && n.Mode == ModeBridge {
					return nil, fmt.Errorf("network %s has a docker-backend VM (%s), and the docker backend cannot enforce an egress policy; remove it first", name, a.VM)
				}
			}
		}
		n.Egress = o.Egress
	}
	if err := m.Store.Put(n); err != nil {
		return nil, err
	}
	if n.Mode == ModeBridge {
		if err := m.applyFirewall(); err != nil {
			return nil, fmt.Errorf("network %s: apply policy: %w", name, err)
		}
	}
	return n, nil
}

// egressOpen reports whether e allows everything (deny lists aside, which
// only the bridged firewall enforces, so they count as a policy too).
func egressOpen(e *Egress) bool {
	return e == nil || ((e.Preset == "" || e.Preset == EgressOpen) && len(e.Deny) == 0)
}

// Drop is one destination a VM was refused: the first drop of a run of them.
type Drop struct {
	VM          string    `json:"vm,omitempty"`
	Source      string    `json:"source"`
	Destination string    `json:"destination"`
	FirstSeen   time.Time `json:"first_seen,omitzero"`
}
