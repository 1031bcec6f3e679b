package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/google/nftables"
	"github.com/miekg/dns"
)

// Egress mode: what an egress policy costs a connection made by name. On a
// restricted network the network's DNS server answers only allowed names
// and, before answering, puts the answer's addresses into the firewall's
// allow set; an open network's server only forwards. Each sample is one
// resolve (a DNS A query from the guest to its gateway, forwarded by the
// network's DNS server to the bench's fake DNS) plus one TCP connect to
// the answer, timed together by the probe with the guest's clock.
//
// The fake internet is the sink namespace, behind mvm's namespace's only
// default route (a veth, 198.18.0.0/24: reserved for benchmarking): a DNS
// server of this process and a listener that accepts every connect, on
// addresses that are local there (198.18.1.0/24, 198.18.128.0/17). mvmctl
// runs under `ip netns exec`, which puts /etc/netns/NS/resolv.conf over
// /etc/resolv.conf, so the networks' DNS servers forward to the fake one.
//
// Names come in two kinds: "repeat", one name asked every time (its
// address is refreshed in the allow set), and "fresh", a name never asked
// before per sample, answered with an address never handed out before (a
// new element in the allow set: the first-resolution cost).

const (
	upLink    = "nbup0" // mvm namespace's uplink, to the fake internet
	inetLink  = "nbup1"
	upCIDR    = "198.18.0.2/24"
	inetCIDR  = "198.18.0.1/24"
	inetGW    = "198.18.0.1"
	fixedNet  = "198.18.1.0/24"   // the fake internet's named hosts and DNS
	freshNet  = "198.18.128.0/17" // one address per fresh name
	fakeDNSIP = "198.18.1.53"
	canary    = "canary.other.test" // no policy allows it
	canaryIP  = "198.18.1.30"
	fakeTTL   = 300
	egressMem = "128M"
)

// nameSet is what a case resolves: one repeat name and a zone whose
// subdomains are the fresh names.
type nameSet struct {
	Label  string `json:"label"`
	Repeat string `json:"repeat"`
	Fresh  string `json:"fresh_zone"`
	addr   string // the repeat name's address
}

var (
	benchNames    = nameSet{Label: "bench.test", Repeat: "api.bench.test", Fresh: "fresh.bench.test", addr: "198.18.1.10"}
	registryNames = nameSet{Label: "registry", Repeat: "deb.debian.org", Fresh: "nbfresh.debian.org", addr: "198.18.1.20"}
)

// egressNet is one mvm network of the run and its VM.
type egressNet struct {
	policy, network, vm string
	egress              []string  // network create flags
	names               []nameSet // what its VM resolves
	restricted          bool
}

// egressCase is one network measured with one name set.
type egressCase struct {
	Policy  string       `json:"policy"`
	Network string       `json:"network"`
	Egress  string       `json:"egress"`
	Names   nameSet      `json:"names"`
	Repeat  egressSeries `json:"repeat"`
	Fresh   egressSeries `json:"fresh"`
	Clock   string       `json:"guest_clocksource"`
	net     egressNet
}

type egressSeries struct {
	P50Ms        float64   `json:"p50_ms"`
	P95Ms        float64   `json:"p95_ms"`
	ResolveP50Ms float64   `json:"resolve_p50_ms"`
	ConnectP50Ms float64   `json:"connect_p50_ms"`
	Retries      int       `json:"dns_retries"`
	TotalMs      []float64 `json:"total_ms"`
	resolveUs    []float64
	connectUs    []float64
	totalUs      []float64
}

func (s *egressSeries) add(p probeOut) {
	s.totalUs = append(s.totalUs, p.Total...)
	s.resolveUs = append(s.resolveUs, p.Resolve...)
	s.connectUs = append(s.connectUs, p.Connect...)
	s.Retries += p.Retries
}

func (s *egressSeries) finish() {
	ms := func(us []float64) []float64 {
		var out []float64
		for _, v := range us {
			out = append(out, round3(v/1000))
		}
		return out
	}
	s.TotalMs = ms(s.totalUs)
	s.P50Ms, s.P95Ms = median(s.TotalMs), percentile(s.TotalMs, 95)
	s.ResolveP50Ms, s.ConnectP50Ms = median(ms(s.resolveUs)), median(ms(s.connectUs))
}

// egressRatio is a restricted case against the open one with the same
// names and kind: restricted / open, ≤ target is good.
type egressRatio struct {
	Policy string  `json:"policy"`
	Names  string  `json:"names"`
	Kind   string  `json:"kind"`
	P50    float64 `json:"p50_ratio"`
	P95    float64 `json:"p95_ratio"`
	// DeltaP50Ms is what the policy adds to the median, restricted - open.
	DeltaP50Ms float64 `json:"delta_p50_ms"`
	P50OK      bool    `json:"p50_ok"`
	P95OK      bool    `json:"p95_ok"`
}

type egressReport struct {
	Kernel      string            `json:"kernel"`
	Accel       string            `json:"accel"`
	Resolves    int               `json:"resolves"` // per case and kind
	Runs        int               `json:"runs"`
	Memory      string            `json:"vm_memory"`
	Cases       []egressCase      `json:"cases"`
	Ratios      []egressRatio     `json:"ratios"`
	TargetRatio float64           `json:"target_ratio"`
	AllowSet    map[string]int    `json:"allow_set_elements"` // per restricted network, at the end
	TSCKHz      string            `json:"tsc_khz,omitempty"`  // the probe timed with the TSC at this rate
	Upstream    int               `json:"upstream_queries"`   // what the fake DNS answered
	Checks      []string          `json:"checks"`
	Method      map[string]string `json:"method"`
}

var egressMethod = map[string]string{
	"sample":   "static probe in the guest: a DNS A query in one UDP datagram on a fresh socket to the guest's resolver (the network's gateway), then a blocking connect(2) to the answer; total = query sent to connect returned, timed with the TSC under TCG (else the guest's monotonic clock); one warm-up per batch not reported, 10 ms between samples",
	"repeat":   "the same name every sample: the network's DNS server forwards it each time (it has no cache) and, on a restricted network, refreshes the address in the allow set",
	"fresh":    "a name never asked before per sample ({i}.VM-rROUND.ZONE), answered with an address never handed out before: a new element in the allow set",
	"upstream": "the networks' DNS servers forward to a DNS server in the bench (through /etc/netns/NS/resolv.conf), on a veth in a namespace of the bench's own; the connects go to a listener there",
	"order":    "all VMs up at once, one guest working at a time; per round each kind runs a batch on each case, the order of kinds and cases reversed every other round",
	"ratio":    "restricted / open for the same names and kind; <= target is good",
}

// benchEgress does the egress run; everything it makes is registered on e.
func benchEgress(ctx context.Context, e *env, o options) (*egressReport, error) {
	m, probe, err := setup(ctx, e, o, false, func() error { return fakeInternet(e) })
	if err != nil {
		return nil, err
	}
	f := newFakeDNS()
	if err := f.start(e); err != nil {
		return nil, err
	}
	s := newSink(0)
	e.onExit("close sink", func() error { s.close(); return nil })
	if err := s.listen(&e.sinkH, "0.0.0.0", connectPort); err != nil {
		return nil, err
	}

	// The open network resolves every restricted one's names, so each
	// restricted case has its baseline with the same names.
	nets := []egressNet{
		{policy: "open", network: "nbopen", vm: "nb-open", egress: []string{"--egress", "open"}, names: []nameSet{benchNames}},
		{policy: "allow-list", network: "nballow", vm: "nb-allow", restricted: true, names: []nameSet{benchNames},
			egress: []string{"--egress", "none", "--allow", benchNames.Repeat, "--allow", "*." + benchNames.Fresh}},
	}
	if o.registries {
		nets[0].names = append(nets[0].names, registryNames)
		nets = append(nets, egressNet{policy: "registries", network: "nbreg", vm: "nb-reg", restricted: true,
			names: []nameSet{registryNames}, egress: []string{"--egress", "registries"}})
	}
	var cases []*egressCase
	for _, n := range nets {
		for _, ns := range n.names {
			cases = append(cases, &egressCase{Policy: n.policy, Network: n.network, Egress: strings.Join(n.egress, " "), Names: ns, net: n})
		}
	}

	rep := &egressReport{Resolves: o.resolves, Runs: o.runs, Memory: egressMem, TargetRatio: 1.1, Method: egressMethod, AllowSet: map[string]int{}}
	for _, n := range nets {
		m.nets = append(m.nets, n.network)
		if _, err := m.run(ctx, time.Minute, append([]string{"network", "create", n.network, "--mode", "bridge"}, n.egress...)...); err != nil {
			return nil, err
		}
	}
	for _, n := range nets {
		e.logf("egress: up %s on %s (%s)", n.vm, n.network, strings.Join(n.egress, " "))
		if _, err := m.up(ctx, n.vm, n.network, o.image, "--memory", egressMem, "--cpus", "1"); err != nil {
			return nil, err
		}
		if err := m.installProbe(ctx, n.vm, probe); err != nil {
			return nil, err
		}
	}
	argv, err := m.argv(nets[0].vm)
	if err != nil {
		return nil, err
	}
	if rep.Kernel, err = kernelRelease(argValue(argv, "-kernel")); err != nil {
		return nil, err
	}
	rep.Accel = argValue(argv, "-accel")
	clockArgs := ""
	if rep.TSCKHz = tscKHz(argv); rep.TSCKHz != "" {
		clockArgs = " -tsc-khz " + rep.TSCKHz
	}

	// The policies hold, so what is measured is the restricted path.
	for _, n := range nets {
		c, err := checkPolicy(ctx, m, f, n)
		if err != nil {
			return nil, err
		}
		rep.Checks = append(rep.Checks, c...)
	}

	batch := func(c *egressCase, fresh bool, round, n int) (probeOut, error) {
		name := c.Names.Repeat
		if fresh {
			name = fmt.Sprintf("{i}.%s-r%d.%s", c.net.vm, round, c.Names.Fresh)
		}
		out, err := m.sh(ctx, c.net.vm, fmt.Sprintf("/tmp/nbprobe -resolve '%s' -port %d -n %d%s", name, connectPort, n, clockArgs))
		if err != nil {
			return probeOut{}, err
		}
		p, err := parseProbe(string(out))
		if err != nil {
			return p, fmt.Errorf("VM %s: %w", c.net.vm, err)
		}
		if len(p.Total) != n {
			return p, fmt.Errorf("VM %s: probe reported %d samples, want %d", c.net.vm, len(p.Total), n)
		}
		if strings.Contains(p.Clock, "jiffies") && !strings.HasPrefix(p.Clock, "rdtsc/") {
			return p, fmt.Errorf("VM %s: the probe timed with %s, whose steps are ticks", c.net.vm, p.Clock)
		}
		c.Clock = p.Clock
		return p, nil
	}
	// Warm-up: each network's DNS server's first forwards and each allow
	// set's first elements are not what a running VM pays.
	for _, c := range cases {
		for _, fresh := range []bool{false, true} {
			if _, err := batch(c, fresh, -1, 3); err != nil {
				return nil, err
			}
		}
	}
	w := workload{Runs: o.runs, Connects: o.resolves}
	for r := 0; r < o.runs; r++ {
		kinds, order := []bool{false, true}, slices.Clone(cases)
		if r%2 == 1 {
			slices.Reverse(kinds)
			slices.Reverse(order)
		}
		n := w.batch(r)
		for _, fresh := range kinds {
			for _, c := range order {
				e.logf("egress: round %d %s %s fresh=%v n=%d", r, c.Policy, c.Names.Label, fresh, n)
				p, err := batch(c, fresh, r, n)
				if err != nil {
					return nil, err
				}
				if fresh {
					c.Fresh.add(p)
				} else {
					c.Repeat.add(p)
				}
			}
		}
	}
	for _, c := range cases {
		c.Repeat.finish()
		c.Fresh.finish()
		rep.Cases = append(rep.Cases, *c)
	}
	for _, c := range cases {
		if !c.net.restricted {
			continue
		}
		for _, b := range cases {
			if b.net.restricted || b.Names != c.Names {
				continue
			}
			for _, k := range []struct {
				kind string
				r, o egressSeries
			}{{"repeat", c.Repeat, b.Repeat}, {"fresh", c.Fresh, b.Fresh}} {
				x := egressRatio{Policy: c.Policy, Names: c.Names.Label, Kind: k.kind, P50: ratio(k.r.P50Ms, k.o.P50Ms), P95: ratio(k.r.P95Ms, k.o.P95Ms),
					DeltaP50Ms: round3(k.r.P50Ms - k.o.P50Ms)}
				x.P50OK, x.P95OK = x.P50 <= rep.TargetRatio, x.P95 <= rep.TargetRatio
				rep.Ratios = append(rep.Ratios, x)
			}
		}
	}
	for _, n := range nets {
		if n.restricted {
			if rep.AllowSet[n.network], err = allowSetSize(e, n.network); err != nil {
				return nil, err
			}
		}
	}
	rep.Upstream = f.answered()
	return rep, nil
}

// fakeInternet gives mvm's namespace its uplink and default route into the
// sink namespace and makes the fake internet's addresses local there. It
// also points mvmctl's resolv.conf at the fake DNS. It runs before mvmctl
// first does: mvm reads the uplink's MTU when it makes a network.
func fakeInternet(e *env) error {
	etc := filepath.Join("/etc/netns", e.ns)
	if _, err := os.Stat(etc); err == nil {
		return fmt.Errorf("%s already exists: refusing to touch it", etc)
	}
	if _, err := os.Stat("/etc/netns"); err != nil {
		// Ours to remove at the end, unless something else is in it by then.
		e.onExit("remove /etc/netns", func() error {
			if err := os.Remove("/etc/netns"); err != nil && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			return nil
		})
	}
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return err
	}
	e.onExit("remove "+etc, func() error { return os.RemoveAll(etc) })
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver "+fakeDNSIP+"\n"), 0o644); err != nil {
		return err
	}
	if err := e.veth(e.ns, upLink, inetLink, "", inetCIDR, 1500); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"-n", e.ns, "addr", "add", upCIDR, "dev", upLink},
		{"-n", e.ns, "route", "add", "default", "via", inetGW},
		{"-n", e.sinkNS, "route", "add", "local", fixedNet, "dev", "lo"},
		{"-n", e.sinkNS, "route", "add", "local", freshNet, "dev", "lo"},
	} {
		if err := run(context.Background(), "ip", args...); err != nil {
			return err
		}
	}
	// After mvmctl has removed its networks, its table must be gone too
	// (the namespace's deletion would hide a leftover).
	e.onExit("nftables tables left by mvmctl", func() error {
		ts, err := nftTables(e)
		if err == nil && len(ts) > 0 {
			err = fmt.Errorf("left in %s: %s", e.ns, strings.Join(ts, ", "))
		}
		return err
	})
	return nil
}

// checkPolicy shows n's policy in force: the canary name (allowed by no
// policy) resolves on an open network only, and is never forwarded from a
// restricted one; its address is reached from an open network only.
func checkPolicy(ctx context.Context, m *mvm, f *fakeDNS, n egressNet) ([]string, error) {
	before := f.asked(canary)
	out, rerr := m.sh(ctx, n.vm, fmt.Sprintf("/tmp/nbprobe -resolve %s -port %d -n 1 -warmup 0", canary, connectPort))
	_, cerr := m.sh(ctx, n.vm, fmt.Sprintf("/tmp/nbprobe -addr %s:%d -n 1 -warmup 0 -timeout 2s", canaryIP, connectPort))
	forwarded := f.asked(canary) > before
	if !n.restricted {
		if rerr != nil || cerr != nil || !forwarded {
			return nil, fmt.Errorf("open network %s: resolve %s (%v) or connect to %s (%v) failed", n.network, canary, rerr, canaryIP, cerr)
		}
		return []string{fmt.Sprintf("%s: %s resolved and %s reached (open)", n.network, canary, canaryIP)}, nil
	}
	switch {
	case rerr == nil || !strings.Contains(string(out), "rcode_3"):
		return nil, fmt.Errorf("network %s (%s): %s should be NXDOMAIN: %q", n.network, n.policy, canary, out)
	case forwarded:
		return nil, fmt.Errorf("network %s (%s): the DNS server forwarded %s, which the policy refuses", n.network, n.policy, canary)
	case cerr == nil:
		return nil, fmt.Errorf("network %s (%s): a connect to %s, never resolved, got through", n.network, n.policy, canaryIP)
	}
	return []string{fmt.Sprintf("%s: %s NXDOMAIN and never forwarded, connect to %s dropped (%s)", n.network, canary, canaryIP, n.policy)}, nil
}

// nftConn is a netlink connection to nftables in mvm's namespace.
func nftConn(e *env) (*nftables.Conn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(e.nsH)))
	if err != nil {
		return nil, fmt.Errorf("nftables in %s: %w", e.ns, err)
	}
	return c, nil
}

// nftTables lists the inet tables in mvm's namespace.
func nftTables(e *env) ([]string, error) {
	c, err := nftConn(e)
	if err != nil {
		return nil, err
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nftables in %s: list tables: %w", e.ns, err)
	}
	var out []string
	for _, t := range ts {
		out = append(out, t.Name)
	}
	return out, nil
}

// allowSetSize counts the live elements of network's allow set(s).
func allowSetSize(e *env, network string) (int, error) {
	c, err := nftConn(e)
	if err != nil {
		return 0, err
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return 0, fmt.Errorf("nftables in %s: list tables: %w", e.ns, err)
	}
	n := 0
	for _, t := range ts {
		sets, err := c.GetSets(t)
		if err != nil {
			return 0, fmt.Errorf("nftables table %s: %w", t.Name, err)
		}
		for _, s := range sets {
			if !strings.HasPrefix(s.Name, "allow-"+network+"-") {
				continue
			}
			els, err := c.GetSetElements(s)
			if err != nil {
				return 0, fmt.Errorf("nftables set %s: %w", s.Name, err)
			}
			n += len(els)
		}
	}
	return n, nil
}

// fakeDNS is the fake internet's DNS server: the name sets' repeat names
// and the canary have fixed addresses, every name under a fresh zone gets
// the next unused address of freshNet, anything else is NXDOMAIN.
type fakeDNS struct {
	mu    sync.Mutex
	fixed map[string]string // FQDN → address
	zones []string          // ".ZONE."
	fresh map[string]netip.Addr
	next  netip.Addr
	pool  netip.Prefix
	count map[string]int // queries per name
	total int
	srv   *dns.Server
}

func newFakeDNS() *fakeDNS {
	pool := netip.MustParsePrefix(freshNet)
	f := &fakeDNS{fixed: map[string]string{canary + ".": canaryIP}, fresh: map[string]netip.Addr{},
		count: map[string]int{}, pool: pool, next: pool.Addr().Next()}
	for _, ns := range []nameSet{benchNames, registryNames} {
		f.fixed[ns.Repeat+"."] = ns.addr
		f.zones = append(f.zones, "."+ns.Fresh+".")
	}
	return f
}

// start serves UDP on fakeDNSIP:53 in the sink namespace until teardown.
func (f *fakeDNS) start(e *env) error {
	var pc net.PacketConn
	if err := inNS(&e.sinkH, func() (err error) {
		pc, err = net.ListenPacket("udp4", net.JoinHostPort(fakeDNSIP, "53"))
		return err
	}); err != nil {
		return fmt.Errorf("fake DNS: %w", err)
	}
	up := make(chan struct{})
	f.srv = &dns.Server{PacketConn: pc, Handler: f, NotifyStartedFunc: func() { close(up) }}
	done := make(chan error, 1)
	go func() { done <- f.srv.ActivateAndServe() }()
	select {
	case <-up:
	case err := <-done:
		pc.Close()
		return fmt.Errorf("fake DNS: %w", err)
	}
	e.onExit("stop fake DNS", func() error { return f.srv.Shutdown() })
	return nil
}

func (f *fakeDNS) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	ip, ok := f.lookup(strings.ToLower(q.Name))
	switch {
	case !ok:
		m.Rcode = dns.RcodeNameError
	case q.Qtype == dns.TypeA:
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: fakeTTL}, A: net.ParseIP(ip).To4()}}
	}
	_ = w.WriteMsg(m)
}

// lookup answers name (lower case, fully qualified), counting the query.
func (f *fakeDNS) lookup(name string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.count[name]++
	f.total++
	if ip, ok := f.fixed[name]; ok {
		return ip, true
	}
	if a, ok := f.fresh[name]; ok {
		return a.String(), true
	}
	for _, z := range f.zones {
		if strings.HasSuffix(name, z) && f.pool.Contains(f.next) {
			a := f.next
			f.fresh[name], f.next = a, a.Next()
			return a.String(), true
		}
	}
	return "", false
}

// asked is how many queries for name (no trailing dot) reached us.
func (f *fakeDNS) asked(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count[name+"."]
}

func (f *fakeDNS) answered() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.total
}

func printEgress(w io.Writer, r *egressReport) {
	fmt.Fprintf(w, "bench/net egress: kernel %s, accel %s; resolve+connect, %d per case and kind over %d rounds; VMs %s, 1 vCPU\n",
		r.Kernel, r.Accel, r.Resolves, r.Runs, r.Memory)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tNAMES\tKIND\tP50 ms\tP95 ms\tRESOLVE p50\tCONNECT p50\tDNS RETRIES")
	for _, c := range r.Cases {
		for _, k := range []struct {
			kind string
			s    egressSeries
		}{{"repeat", c.Repeat}, {"fresh", c.Fresh}} {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.3f\t%.3f\t%.3f\t%.3f\t%d\n", c.Policy, c.Names.Label, k.kind, k.s.P50Ms, k.s.P95Ms, k.s.ResolveP50Ms, k.s.ConnectP50Ms, k.s.Retries)
		}
	}
	_ = tw.Flush()
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RATIO vs open\tNAMES\tKIND\tP50\tP95\tP50 DELTA ms\tTARGET")
	for _, x := range r.Ratios {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.3f %s\t%.3f %s\t%+.3f\t≤ %.2f\n", x.Policy, x.Names, x.Kind, x.P50, verdict(x.P50OK), x.P95, verdict(x.P95OK), x.DeltaP50Ms, r.TargetRatio)
	}
	_ = tw.Flush()
	for _, c := range r.Checks {
		fmt.Fprintln(w, "  check:", c)
	}
	for _, n := range slices.Sorted(maps.Keys(r.AllowSet)) {
		fmt.Fprintf(w, "  allow set of %s: %d elements at the end\n", n, r.AllowSet[n])
	}
	var clocks []string
	for _, c := range r.Cases {
		if !slices.Contains(clocks, c.Clock) {
			clocks = append(clocks, c.Clock)
		}
	}
	fmt.Fprintf(w, "  fake DNS answered %d queries; probe clock %s (rdtsc/: the TSC, at %s kHz, on a guest clocksource)\n", r.Upstream, strings.Join(clocks, ", "), r.TSCKHz)
}
