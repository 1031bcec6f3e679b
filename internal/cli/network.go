package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/network"
	"github.com/mvm-dev/mvm/internal/network/dns"
)

func newNetworkCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "network",
		Aliases: []string{"net"},
		Short:   "Create, list, inspect and remove VM networks",
		Long: `VM networks. Every VM joins one ('default' unless up --network says
otherwise; 'none' gives it no NIC). As root a network is a host bridge with
NAT out of the uplink, its VMs reach each other by name (web, web.NETWORK)
and no other network; without privileges it is user-mode networking: the
VM reaches out and publishes ports, but VMs cannot reach each other.`,
		Args: exactArgs(0, "a subcommand"),
	}
	cmd.AddCommand(newNetworkCreateCommand(g), newNetworkUpdateCommand(g), newNetworkLsCommand(g), newNetworkInspectCommand(g),
		newNetworkRmCommand(g), newNetworkPruneCommand(g), newNetworkDNSServeCommand(g))
	return cmd
}

func newNetworkCreateCommand(g *globals) *cobra.Command {
	var o network.CreateOptions
	var eg egressFlags
	cmd := &cobra.Command{
		Use:   "create NAME [--subnet CIDR] [--mode bridge|user] [--internal]",
		Short: "Create a network",
		Example: `  mvmctl network create isolated
  mvmctl network create lab --subnet 10.90.0.0/24
  mvmctl network create sealed --internal`,
		Args: exactArgs(1, "the network's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name = args[0]
			o.Egress = eg.egress(cmd, nil)
			m, err := g.manager()
			if err != nil {
				return err
			}
			n, err := m.Networks().Create(cmd.Context(), o)
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, netItem(n, m.Networks()))
			}
			fmt.Fprintln(g.stdout, n.Name)
			fmt.Fprintf(g.stderr, "Network %s (%s, %s). Try: mvmctl up --network %s\n", n.Name, n.Mode, n.Subnet, n.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Subnet, "subnet", "", "IPv4 subnet, e.g. 10.90.0.0/24 (default: a free /24; one that collides with the host's routes is refused)")
	f.StringVar(&o.Mode, "mode", "", "bridge (root or CAP_NET_ADMIN) or user (default: bridge when privileged)")
	f.BoolVar(&o.Internal, "internal", false, "no route out of the network at all")
	eg.register(cmd)
	return cmd
}

// egressFlags are --egress, --allow and --deny of create and update.
type egressFlags struct {
	preset      string
	allow, deny []string
}

func (e *egressFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&e.preset, "egress", "", "egress preset: "+strings.Join(network.PresetNames(), ", ")+" (default open; see docs/networking.md)")
	f.StringArrayVar(&e.allow, "allow", nil, "also allow HOST, *.DOMAIN, CIDR or CIDR:PORT (repeatable; replaces the list on update)")
	f.StringArrayVar(&e.deny, "deny", nil, "deny CIDR, whatever else allows it (repeatable; replaces the list on update)")
}

// egress merges the flags given over old (nil for create); nil: no change.
func (e *egressFlags) egress(cmd *cobra.Command, old *network.Egress) *network.Egress {
	f := cmd.Flags()
	if !f.Changed("egress") && !f.Changed("allow") && !f.Changed("deny") {
		return nil
	}
	out := &network.Egress{Preset: network.EgressOpen}
	if old != nil {
		*out = *old
	}
	if f.Changed("egress") {
		out.Preset = e.preset
	}
	if f.Changed("allow") {
		out.Allow = nonEmpty(e.allow)
	}
	if f.Changed("deny") {
		out.Deny = nonEmpty(e.deny)
	}
	return out
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func newNetworkUpdateCommand(g *globals) *cobra.Command {
	var eg egressFlags
	cmd := &cobra.Command{
		Use:   "update NAME [--egress PRESET] [--allow RULE]... [--deny CIDR]...",
		Short: "Change a network's egress policy; running VMs follow it at once",
		Example: `  mvmctl network update lab --egress registries
  mvmctl network update lab --egress none --allow api.example.com --allow 10.1.2.0/24:443
  mvmctl network update lab --allow ''   # clear the allow list`,
		Args: exactArgs(1, "the network's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			old, err := m.Networks().Get(args[0])
			if err != nil {
				return err
			}
			e := eg.egress(cmd, old.Egress)
			if e == nil {
				return usageError{fmt.Errorf("nothing to update: give --egress, --allow or --deny")}
			}
			n, err := m.Networks().Update(cmd.Context(), args[0], network.UpdateOptions{Egress: e})
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, netItem(n, m.Networks()))
			}
			fmt.Fprintln(g.stdout, n.Name)
			fmt.Fprintf(g.stderr, "Network %s: egress %s, in force for its running VMs now.\n", n.Name, n.Egress.Describe())
			return nil
		},
	}
	eg.register(cmd)
	return cmd
}

// netView is the `network ls/inspect --json` shape.
type netView struct {
	Name      string                `json:"name"`
	Mode      string                `json:"mode"`
	Subnet    string                `json:"subnet"`
	Gateway   string                `json:"gateway"`
	Bridge    string                `json:"bridge,omitempty"`
	Internal  bool                  `json:"internal"`
	MTU       int                   `json:"mtu,omitempty"`
	Created   time.Time             `json:"created"`
	VMs       []*network.Attachment `json:"vms"`
	DNS       string                `json:"dns"`
	VMToVM    bool                  `json:"vm_to_vm"`
	Egress    string                `json:"egress"`
	Policy    *policyView           `json:"policy,omitempty"`
	Firewall  string                `json:"firewall,omitempty"`
	DNSServer string                `json:"dns_server,omitempty"`
	// DockerNetwork is the Docker network its docker-backend VMs join.
	DockerNetwork string `json:"docker_network,omitempty"`
}

func netItem(n *network.Network, nm *network.Manager) netView {
	v := netView{Name: n.Name, Mode: n.Mode, Subnet: n.Subnet, Gateway: n.Gateway, Bridge: n.Bridge,
		Internal: n.Internal, MTU: n.MTU, Created: n.Created, VMs: []*network.Attachment{}, DockerNetwork: n.DockerName}
	for _, name := range n.VMNames() {
		v.VMs = append(v.VMs, n.Attached[name])
	}
	switch n.Mode {
	case network.ModeBridge:
		v.VMToVM = true
		v.DNS = n.Gateway + ":53 (VM names, then the host's resolvers)"
		v.Firewall = "nftables table inet " + nm.Table
		v.DNSServer = "stopped"
		if nm.DNSRunning(n.Name) {
			v.DNSServer = "running"
		}
		v.Egress = "open (NAT out of the host's uplink)"
	default:
		v.DNS = network.UserDNS + " (the host's resolvers, through the VMM)"
		v.Egress = "open (user-mode NAT in the VMM)"
	}
	if n.Internal {
		v.Egress = "none (internal network)"
	}
	if n.Mode == network.ModeBridge && !n.Internal {
		v.Policy = policyOf(n, nm)
		v.Egress = n.Egress.Describe()
	}
	return v
}

// policyView is what a network's egress policy allows, as enforced.
type policyView struct {
	Preset  string            `json:"preset"`
	Names   []string          `json:"names,omitempty"`
	CIDRs   []string          `json:"cidrs,omitempty"`
	Deny    []string          `json:"deny,omitempty"`
	Dropped map[string]uint64 `json:"dropped,omitempty"` // per VM: packets dropped by the policy
	// Drops are the destinations dropped lately, one entry per VM and
	// destination with the time of its first drop.
	Drops []network.Drop `json:"drops,omitempty"`
}

func policyOf(n *network.Network, nm *network.Manager) *policyView {
	p, err := n.Egress.Compile()
	if err != nil {
		return &policyView{Preset: "invalid: " + err.Error()}
	}
	v := &policyView{Preset: network.EgressOpen}
	if n.Egress != nil && n.Egress.Preset != "" {
		v.Preset = n.Egress.Preset
	}
	if !p.Open {
		v.Names = p.Names()
		v.Dropped = nm.DropCounters(n)
		v.Drops = nm.DropsSeen(n)
	}
	for _, c := range p.CIDRs {
		v.CIDRs = append(v.CIDRs, c.String())
	}
	for _, d := range p.Deny {
		v.Deny = append(v.Deny, d.String())
	}
	return v
}

func newNetworkLsCommand(g *globals) *cobra.Command {
	var f listFormat
	return withFormat(g, &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List networks",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			nets, lerr := m.Networks().List()
			items := []netView{}
			for _, n := range nets {
				items = append(items, netItem(n, m.Networks()))
			}
			if g.json {
				if err := writeJSON(g.stdout, items); err != nil {
					return err
				}
				return lerr
			}
			if f.set() {
				if err := f.write(g.stdout, items); err != nil {
					return err
				}
				return lerr
			}
			if len(items) == 0 && lerr == nil {
				fmt.Fprintln(g.stderr, "No networks yet; 'default' is created by the first 'mvmctl up'. Create one with 'mvmctl network create NAME'.")
				return nil
			}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "NAME\tMODE\tSUBNET\tGATEWAY\tVMS\tFLAGS")
			for _, it := range items {
				flags := []string{}
				if it.Internal {
					flags = append(flags, "internal")
				}
				if !it.VMToVM {
					flags = append(flags, "no-vm-to-vm")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", it.Name, it.Mode, it.Subnet, it.Gateway, len(it.VMs), strings.Join(flags, ","))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			return lerr
		},
	}, &f, netView{})
}

func newNetworkInspectCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a network: subnet, mode, attached VMs with their addresses, what it allows",
		Args:  exactArgs(1, "the network's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			n, err := m.Networks().Get(args[0])
			if err != nil {
				return err
			}
			v := netItem(n, m.Networks())
			if g.json {
				return writeJSON(g.stdout, v)
			}
			tw := newTable(g.stdout)
			fmt.Fprintf(tw, "Name:\t%s\n", v.Name)
			fmt.Fprintf(tw, "Mode:\t%s\n", v.Mode)
			fmt.Fprintf(tw, "Subnet:\t%s\n", v.Subnet)
			fmt.Fprintf(tw, "Gateway:\t%s\n", v.Gateway)
			if v.Bridge != "" {
				fmt.Fprintf(tw, "Bridge:\t%s (MTU %d)\n", v.Bridge, v.MTU)
				fmt.Fprintf(tw, "Firewall:\t%s\n", v.Firewall)
				fmt.Fprintf(tw, "DNS server:\t%s\n", v.DNSServer)
			}
			fmt.Fprintf(tw, "DNS:\t%s\n", v.DNS)
			fmt.Fprintf(tw, "Egress:\t%s\n", v.Egress)
			if p := v.Policy; p != nil {
				switch {
				case p.Preset == network.EgressOpen:
					fmt.Fprintf(tw, "  allows:\teverything (flagged by doctor)\n")
				case len(p.Names)+len(p.CIDRs) == 0:
					fmt.Fprintf(tw, "  allows:\tonly this network's VMs and its DNS for their names\n")
				default:
					fmt.Fprintf(tw, "  allows:\t%s\n", strings.Join(append(append([]string{}, p.Names...), p.CIDRs...), " "))
				}
				if len(p.Deny) > 0 {
					fmt.Fprintf(tw, "  denies:\t%s\n", strings.Join(p.Deny, " "))
				}
			}
			if v.VMToVM {
				fmt.Fprintf(tw, "VM to VM:\tyes, within this network only\n")
			} else {
				fmt.Fprintf(tw, "VM to VM:\tno (user mode: each VM has its own NAT; use a bridged network as root for that)\n")
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(v.VMs) == 0 {
				fmt.Fprintln(g.stdout, "VMs: none")
				return nil
			}
			fmt.Fprintln(g.stdout, "VMs:")
			tw = newTable(g.stdout)
			fmt.Fprintln(tw, "  NAME\tIP\tMAC\tTAP\tPORTS\tDROPPED")
			for _, a := range v.VMs {
				var ports []string
				for _, p := range a.Ports {
					ports = append(ports, p.String())
				}
				tap := a.TAP
				if tap == "" {
					tap = "-"
				}
				dropped := "-"
				if v.Policy != nil && v.Policy.Dropped != nil {
					dropped = fmt.Sprint(v.Policy.Dropped[a.VM])
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", a.VM, a.IP, a.MAC, tap, strings.Join(ports, ","), dropped)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if v.Policy == nil || len(v.Policy.Drops) == 0 {
				return nil
			}
			if !g.verbose {
				fmt.Fprintf(g.stdout, "%d destinations dropped in the last hour (-v lists them)\n", len(v.Policy.Drops))
				return nil
			}
			fmt.Fprintln(g.stdout, "Dropped destinations (first drop each, last hour):")
			tw = newTable(g.stdout)
			fmt.Fprintln(tw, "  VM\tDESTINATION\tFIRST DROP")
			for _, d := range v.Policy.Drops {
				fmt.Fprintf(tw, "  %s\t%s\t%s\n", dashIfEmpty(d.VM), d.Destination, age(d.FirstSeen))
			}
			return tw.Flush()
		},
	}
}

func newNetworkRmCommand(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove networks (refused while VMs use them)",
		Long: `Remove networks: the record, the bridge, its rules and its DNS server.
A network VMs are attached to is refused, naming them. -f detaches stopped
VMs (they boot with no network until recreated) and says so; it never stops
a running VM.`,
		Args: minArgs(1, "at least one network name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			running := func(vm string) bool {
				rec, err := m.Get(cmd.Context(), vm)
				return err == nil && (rec.State == "running" || rec.State == "paused" || rec.State == "starting")
			}
			for _, name := range args {
				notes, err := m.Networks().Remove(cmd.Context(), name, force, running)
				for _, n := range notes {
					fmt.Fprintln(g.stderr, n)
				}
				if err != nil {
					return err
				}
				fmt.Fprintln(g.stdout, name)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "detach stopped VMs first (never stops a running one)")
	return cmd
}

func newNetworkPruneCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "prune",
		Short: "Remove every network no VM uses (default stays)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			if err := m.Networks().Reconcile(cmd.Context(), m.VMExists); err != nil {
				return err
			}
			removed, err := m.Networks().Prune(cmd.Context())
			if g.json {
				if removed == nil {
					removed = []string{}
				}
				if jerr := writeJSON(g.stdout, removed); jerr != nil {
					return jerr
				}
				return err
			}
			for _, n := range removed {
				fmt.Fprintln(g.stdout, n)
			}
			return err
		},
	}
}

// newNetworkDNSServeCommand is the DNS server of one bridged network, run
// in the background by up (not for people to type). It answers VM names
// from the network's record and forwards the rest to the host's current
// resolvers; it ends when the network's record goes away or on SIGTERM.
func newNetworkDNSServeCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "dns-serve NAME",
		Short:  "Serve DNS for a network (started by up; internal)",
		Hidden: true,
		Args:   exactArgs(1, "the network's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := g.manager()
			if err != nil {
				return err
			}
			nm := m.Networks()
			name := args[0]
			n, err := nm.Get(name)
			if err != nil {
				return err
			}
			if n.Mode != network.ModeBridge {
				return fmt.Errorf("network %s is %s mode: its VMM serves DNS", name, n.Mode)
			}
			gw, err := netip.ParseAddr(n.Gateway)
			if err != nil {
				return fmt.Errorf("network %s: bad gateway %q", name, n.Gateway)
			}
			refused := &firstSeen{}
			names := &vmNames{path: filepath.Join(nm.Store.Dir(), name+".json"), get: func() (*network.Network, error) { return nm.Get(name) }}
			names.refresh()
			srv, err := dns.New(dns.Config{
				Zone:    name,
				Listen:  netip.AddrPortFrom(gw, 53).String(),
				Lookup:  names.lookup,
				Reverse: names.reverse,
				Self:    []netip.Addr{gw},
				Log:     g.log,
				// Egress: a name the policy does not allow is NXDOMAIN; an
				// allowed one's addresses are let in before the VM hears them.
				Allow: func(q string) bool {
					// A stat per forwarded query: a policy change reaches
					// the very next query, not the next poll.
					names.refresh()
					p := names.policy.Load()
					ok := p != nil && p.AllowName(q)
					if !ok && refused.first(q) {
						g.log.Warn("egress: refused name (NXDOMAIN)", "network", name, "name", q)
					}
					return ok
				},
				OnAnswer: func(q string, addrs []netip.Addr, ttl time.Duration) {
					net := names.net.Load()
					if net == nil {
						return
					}
					if err := nm.AllowAddresses(net, addrs, ttl); err != nil {
						g.log.Warn("egress: could not allow resolved addresses; connections to them will be dropped", "name", q, "addrs", addrs, "err", err)
					}
				},
			})
			if err != nil {
				return err
			}
			if err := srv.Start(); err != nil {
				return err
			}
			if err := nm.WriteDNSPid(name); err != nil {
				srv.Close()
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			go names.watch(ctx, stop)
			go reportDrops(ctx, nm, names, g.log)
			g.log.Info("dns serving", "network", name, "listen", gw)
			<-ctx.Done()
			return srv.Close()
		},
	}
}

// firstSeen remembers keys, so a log line is written once per key.
type firstSeen struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (f *firstSeen) first(k string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seen == nil {
		f.seen = map[string]bool{}
	}
	if f.seen[k] || len(f.seen) > 10000 {
		return false
	}
	f.seen[k] = true
	return true
}

// reportDrops logs the first packet the policy drops per VM and
// destination (the firewall records each pair in a set; see DropsSeen).
func reportDrops(ctx context.Context, nm *network.Manager, names *vmNames, log *slog.Logger) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	seen := &firstSeen{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := names.net.Load()
		if n == nil {
			continue
		}
		for _, d := range nm.DropsSeen(n) {
			if seen.first(d.Source + ">" + d.Destination) {
				log.Warn("egress: dropped", "network", n.Name, "vm", d.VM, "destination", d.Destination)
			}
		}
	}
}

// vmNames is the DNS server's view of a network's VMs, refreshed when the
// record file changes.
type vmNames struct {
	mu     sync.Mutex // serialises refresh
	path   string
	get    func() (*network.Network, error)
	mtime  time.Time
	cur    atomic.Pointer[map[string]netip.Addr]
	net    atomic.Pointer[network.Network]
	policy atomic.Pointer[network.Policy]
}

func (v *vmNames) refresh() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	fi, err := os.Stat(v.path)
	if err != nil {
		return false // record gone: the network was removed
	}
	if fi.ModTime().Equal(v.mtime) && v.cur.Load() != nil {
		return true
	}
	n, err := v.get()
	if err != nil {
		return true // torn read is impossible (atomic writes); keep the old view
	}
	m := map[string]netip.Addr{}
	for name, a := range n.Attached {
		if ip, err := netip.ParseAddr(a.IP); err == nil {
			m[name] = ip
		}
	}
	v.cur.Store(&m)
	v.net.Store(n)
	if p, err := n.Egress.Compile(); err == nil {
		v.policy.Store(p)
	} else {
		v.policy.Store(&network.Policy{}) // an unreadable policy allows nothing
	}
	v.mtime = fi.ModTime()
	return true
}

func (v *vmNames) watch(ctx context.Context, stop func()) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !v.refresh() {
				stop()
				return
			}
		}
	}
}

func (v *vmNames) lookup(name string) (netip.Addr, bool) {
	m := v.cur.Load()
	if m == nil {
		return netip.Addr{}, false
	}
	ip, ok := (*m)[name]
	return ip, ok
}

func (v *vmNames) reverse(ip netip.Addr) (string, bool) {
	m := v.cur.Load()
	if m == nil {
		return "", false
	}
	var hits []string
	for name, a := range *m {
		if a == ip {
			hits = append(hits, name)
		}
	}
	if len(hits) == 0 {
		return "", false
	}
	sort.Strings(hits)
	return hits[0], true
}
