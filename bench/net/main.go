// Command net measures mvm's VM networking against raw QEMU in the same
// run, with the same kernel and the same QEMU netdev, for bridged and
// user-mode networks:
//
//   - guest→host TCP throughput: busybox `dd if=/dev/zero bs=64k | nc` in
//     the guest to a sink in this process, which times first to last byte;
//   - TCP connect latency: a static probe in the guest times blocking
//     connect(2)s to the sink (SYN out to SYN-ACK in, guest clock);
//   - `mvmctl up` to ready with a network against --network none.
//
// Everything lives in network namespaces of its own: mvmbench-PID (mvmctl
// with a temporary MVM state/share/config dir, its VMs and networks; the
// image cache is the user's), mvmbench-PID-raw (raw QEMU, its bridge and
// TAP, free of mvm's nftables table and conntrack) and mvmbench-PID-sink.
// All of it is removed on exit, on failure and on SIGINT/SIGTERM. Traffic
// goes only to the bench's own sink.
//
// Bridged mode's sink is not on the bridge's gateway address: mvm's
// firewall lets a guest reach the host only for DNS there (by design, see
// internal/network/firewall_linux.go). It sits in the sink namespace on a
// veth port of the bridge, at the subnet's last address, and raw QEMU's
// bridge has the same veth, so both paths are guest → TAP → bridge → veth.
// User mode's sink listens on 127.0.0.1 in QEMU's namespace (mvm's and
// raw's), which slirp reaches as 10.0.2.2.
//
// With -mode egress it measures the egress policy instead (egress.go):
// resolving a name through the network's DNS server and connecting to it,
// on an allow-listed network against an open one, in the same run.
//
// Run it as root with bench/net/run.sh (or go run ./bench/net -mvmctl
// bin/mvmctl).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netns"

	"github.com/mvm-dev/mvm/internal/paths"
)

type options struct {
	mode       string
	mvmctl     string
	n          int
	runs       int
	sizeMiB    int
	connects   int
	asJSON     bool
	verbose    bool
	probe      string
	busybox    string
	modulesDir string
	image      string
	rawMemFile bool
	resolves   int
	registries bool
}

func main() {
	// The VMs, links and namespaces are removed by teardown: a closed
	// stdout (| head) or Ctrl-C must not end us before it has run. A
	// signal cancels the run's context (which ends the running child)
	// and the run unwinds into teardown.
	signal.Ignore(syscall.SIGPIPE)
	var o options
	flag.StringVar(&o.mode, "mode", "net", "net: throughput, connect latency and up vs raw QEMU; egress: resolve+connect on allow-listed vs open networks")
	flag.StringVar(&o.mvmctl, "mvmctl", "bin/mvmctl", "mvmctl binary")
	flag.IntVar(&o.n, "n", 3, "iterations of each up (none, bridge, user) for the ready-time medians")
	flag.IntVar(&o.runs, "runs", 0, "rounds (default 3; egress mode 8): per mode each a dd|nc stream and a batch of connects on each VM, mvm and raw alternating (median stream reported); egress mode a batch per case and kind")
	flag.IntVar(&o.sizeMiB, "size", 32, "MiB per dd|nc stream (about 9 s each under TCG here)")
	flag.IntVar(&o.connects, "connects", 30, "connects per VM in all (spread over the rounds) for the latency percentiles")
	flag.BoolVar(&o.asJSON, "json", false, "print JSON instead of the table")
	flag.BoolVar(&o.verbose, "v", false, "log each step to stderr")
	flag.StringVar(&o.probe, "probe", "", "prebuilt static probe binary (default: go build ./bench/net/probe)")
	flag.StringVar(&o.busybox, "busybox", "", "static busybox for the raw guest (default: /bin/busybox)")
	flag.StringVar(&o.modulesDir, "modules", "", "module tree of the guest kernel (default: /lib/modules/<its release>)")
	flag.StringVar(&o.image, "image", "", "mvm image to boot (default: mvmctl's default, minimal)")
	flag.BoolVar(&o.rawMemFile, "raw-mem-file", false, "diagnostic: give raw QEMU mvm's file-backed guest RAM (memory-backend-file, share=on, in the bench's temp dir) instead of anonymous RAM")
	flag.IntVar(&o.resolves, "resolves", 160, "egress mode: resolve+connects per network and kind (repeat, fresh), spread over -runs rounds")
	flag.BoolVar(&o.registries, "registries", true, "egress mode: also measure a network with the registries preset")
	flag.Parse()
	if o.runs == 0 {
		o.runs = 3
		if o.mode == "egress" {
			o.runs = 8
		}
	}
	if o.n < 1 || o.runs < 1 || o.sizeMiB < 1 || o.connects < 1 || o.resolves < o.runs {
		fmt.Fprintln(os.Stderr, "bench/net: -n, -runs, -size and -connects must be at least 1, -resolves at least -runs")
		os.Exit(2)
	}
	if o.mode != "net" && o.mode != "egress" {
		fmt.Fprintf(os.Stderr, "bench/net: -mode %q: want net or egress\n", o.mode)
		os.Exit(2)
	}

	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "bench/net: %v: stopping and cleaning up\n", s)
		cancel()
		for s := range sigs {
			fmt.Fprintf(os.Stderr, "bench/net: %v: still cleaning up, please wait\n", s)
		}
	}()

	e := &env{verbose: o.verbose}
	var rep any
	var err error
	if o.mode == "egress" {
		rep, err = benchEgress(ctx, e, o)
	} else {
		rep, err = bench(ctx, e, o)
	}
	if failed := e.teardown(); len(failed) > 0 {
		for _, f := range failed {
			fmt.Fprintln(os.Stderr, "bench/net: cleanup:", f)
		}
		if err == nil {
			err = fmt.Errorf("cleanup left %d thing(s) behind", len(failed))
		}
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/net:", err)
		os.Exit(1)
	}
	if o.asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		return
	}
	switch r := rep.(type) {
	case *report:
		printTable(os.Stdout, r)
	case *egressReport:
		printEgress(os.Stdout, r)
	}
}

// Names of what the bench makes. The namespaces are its own, so these
// cannot collide with anything of the user's.
const (
	rawBridge  = "nbbr0"
	rawTAP     = "nbtap0"
	rawSubnet  = "10.250.0.0/24"
	netBridge  = "nbbridge" // mvm network, bridge mode
	netUser    = "nbuser"   // mvm network, user mode
	userSinkIP = "10.0.2.2" // the guest's view of the host's loopback
)

// side is one system's numbers in one mode.
type side struct {
	ThroughputMBps float64   `json:"throughput_mbps"`
	RunsMBps       []float64 `json:"runs_mbps"`
	StreamBytes    int64     `json:"stream_bytes"`
	ConnectP50Ms   float64   `json:"connect_p50_ms"`
	ConnectP95Ms   float64   `json:"connect_p95_ms"`
	ConnectMs      []float64 `json:"connect_ms"`
	GuestClock     string    `json:"guest_clocksource"`
}

type modeReport struct {
	Mode      string   `json:"mode"`
	Sink      string   `json:"sink"` // address the guests dial
	SinkHost  string   `json:"sink_host"`
	MVM       side     `json:"mvm"`
	Raw       side     `json:"raw_qemu"`
	Netdev    string   `json:"netdev"`
	RawArgv   []string `json:"raw_argv"`
	TputRatio float64  `json:"throughput_ratio"`  // mvm / raw
	P50Ratio  float64  `json:"connect_p50_ratio"` // raw / mvm: ≥ 1 is mvm at least as fast
	P95Ratio  float64  `json:"connect_p95_ratio"`
}

type upReport struct {
	Iterations    int       `json:"iterations"`
	NoneS         []float64 `json:"none_s"`
	BridgeS       []float64 `json:"bridge_s"`
	UserS         []float64 `json:"user_s"`
	NoneMedianS   float64   `json:"none_median_s"`
	BridgeMedianS float64   `json:"bridge_median_s"`
	UserMedianS   float64   `json:"user_median_s"`
	BridgeDeltaMs float64   `json:"bridge_delta_ms"`
	UserDeltaMs   float64   `json:"user_delta_ms"`
	TargetDeltaMs float64   `json:"target_delta_ms"`
}

type report struct {
	Kernel      string            `json:"kernel"`
	Accel       string            `json:"accel"`
	StreamMiB   int               `json:"stream_mib"`
	Runs        int               `json:"runs"`
	Connects    int               `json:"connects"`
	Modes       []modeReport      `json:"modes"`
	Up          upReport          `json:"up"`
	TargetRatio float64           `json:"target_ratio"`
	Method      map[string]string `json:"method"`
}

var method = map[string]string{
	"throughput":  "guest runs `dd if=/dev/zero bs=64k count=N | nc -w 10 SINK 5201`; the sink counts bytes after its first read over first-to-last read (MB = 10^6 bytes)",
	"connect":     "static probe in the guest: blocking connect(2) on a fresh socket timed with the TSC at mvm's tsc_early_khz under TCG, else the guest's monotonic clock (SYN out to SYN-ACK in; in user mode slirp's own host connect is inside), one warm-up not reported, 10 ms between connects; p50 is the median, p95 nearest-rank",
	"order":       "mvm's VM and raw QEMU are both up; each round runs a stream then a batch of connects on each, one guest at a time, the order flipping every round",
	"ratio":       "throughput mvm/raw; latency raw/mvm; >= target is good",
	"up":          "wall time of `mvmctl up --backend qemu --network NET` (returns when the agent answers), none/bridge/user interleaved after one warm-up up; delta = median(NET) - median(none)",
	"bridge_sink": "mvm's firewall admits guest traffic to the host only for DNS on the gateway, so the sink is a veth peer on the bridge (subnet's last address) in a namespace of its own; raw QEMU's bridge has the same veth",
}

// mvm runs mvmctl inside the namespace with the bench's own directories,
// and removes whatever VMs and networks it made on teardown.
type mvm struct {
	bin, ns, state string
	env            []string
	vms            map[string]bool
	nets           []string
	e              *env
}

func (m *mvm) run(ctx context.Context, timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m.e.logf("mvmctl %s", strings.Join(args, " "))
	return output(ctx, m.env, "ip", append([]string{"netns", "exec", m.ns, m.bin}, args...)...)
}

// up boots name on network (extra: more up flags) and returns the wall
// time to ready.
func (m *mvm) up(ctx context.Context, name, network, image string, extra ...string) (time.Duration, error) {
	m.vms[name] = true
	args := []string{"up", "--backend", "qemu", "--name", name, "--network", network}
	if image != "" {
		args = append(args, "--image", image)
	}
	args = append(args, extra...)
	t0 := time.Now()
	_, err := m.run(ctx, 6*time.Minute, args...)
	return time.Since(t0), err
}

func (m *mvm) rm(ctx context.Context, name string) error {
	if _, err := m.run(ctx, 2*time.Minute, "rm", "-f", name); err != nil {
		return err
	}
	delete(m.vms, name)
	return nil
}

func (m *mvm) sh(ctx context.Context, name, script string) ([]byte, error) {
	return m.run(ctx, 10*time.Minute, "exec", name, "--", "sh", "-c", script)
}

// installProbe copies the guest probe into a VM as /tmp/nbprobe.
func (m *mvm) installProbe(ctx context.Context, name, probe string) error {
	if _, err := m.run(ctx, 2*time.Minute, "cp", probe, name+":/tmp/nbprobe"); err != nil {
		return err
	}
	_, err := m.sh(ctx, name, "chmod 755 /tmp/nbprobe")
	return err
}

// argv is the QEMU command line mvm recorded for a running VM.
func (m *mvm) argv(name string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(m.state, "vms", name, "supervisor.json"))
	if err != nil {
		return nil, err
	}
	var sup struct {
		Argv []string `json:"argv"`
	}
	if err := json.Unmarshal(b, &sup); err != nil {
		return nil, err
	}
	if len(sup.Argv) == 0 {
		return nil, fmt.Errorf("VM %s: no argv in supervisor.json", name)
	}
	return sup.Argv, nil
}

func (m *mvm) teardown() error {
	var errs []string
	for name := range m.vms {
		if err := m.rm(context.Background(), name); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for i := len(m.nets) - 1; i >= 0; i-- {
		if _, err := m.run(context.Background(), time.Minute, "network", "rm", "-f", m.nets[i]); err != nil {
			errs = append(errs, err.Error())
		}
	}
	m.nets = nil
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// setup checks what every mode needs, makes the namespaces (raw QEMU's
// with raw) and mvmctl's directories and builds the guest probe. prepare
// runs after the namespaces exist and before mvmctl first runs in them.
func setup(ctx context.Context, e *env, o options, raw bool, prepare func() error) (*mvm, string, error) {
	if os.Geteuid() != 0 {
		return nil, "", fmt.Errorf("needs root: it creates network namespaces, bridges and TAPs")
	}
	bin, err := filepath.Abs(o.mvmctl)
	if err != nil {
		return nil, "", err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, "", fmt.Errorf("mvmctl: %w (run make build first)", err)
	}
	// The user's image cache, resolved as mvmctl would without our
	// overrides (so a legacy ~/.mvm is honoured too).
	dirs, err := paths.Resolve()
	if err != nil {
		return nil, "", err
	}
	if err := newEnv(e, raw); err != nil {
		return nil, "", err
	}
	if prepare != nil {
		if err := prepare(); err != nil {
			return nil, "", err
		}
	}
	state := filepath.Join(e.dir, "state")
	m := &mvm{bin: bin, ns: e.ns, state: state, vms: map[string]bool{}, e: e,
		env: append(os.Environ(), "MVM_STATE_DIR="+state, "MVM_SHARE_DIR="+filepath.Join(e.dir, "share"),
			"MVM_CONFIG_DIR="+filepath.Join(e.dir, "config"), "MVM_CACHE_DIR="+dirs.Cache)}
	e.onExit("mvmctl VMs and networks", m.teardown)

	probe := o.probe
	if probe == "" {
		probe = filepath.Join(e.dir, "nbprobe")
		if err := buildProbe(ctx, probe); err != nil {
			return nil, "", err
		}
	}
	return m, probe, nil
}

// bench does the whole run; everything it makes is registered on e.
func bench(ctx context.Context, e *env, o options) (*report, error) {
	busybox := o.busybox
	if busybox == "" {
		busybox = "/bin/busybox"
		if _, err := os.Stat(busybox); err != nil {
			if busybox, err = exec.LookPath("busybox"); err != nil {
				return nil, fmt.Errorf("no busybox: install busybox-static")
			}
		}
	}
	m, probe, err := setup(ctx, e, o, true, nil)
	if err != nil {
		return nil, err
	}
	w := workload{Blocks: o.sizeMiB * 16, Runs: o.runs, Connects: o.connects}
	s := newSink(int64(o.sizeMiB) << 20)
	e.onExit("close sink", func() error { s.close(); return nil })

	// Raw QEMU's bridge and TAP, in its own namespace.
	rawNet, err := netip.ParsePrefix(rawSubnet)
	if err != nil {
		return nil, err
	}
	rawGW := rawNet.Addr().Next()
	rawSink := lastHost(rawNet)
	if err := ipIn(e.rawNS, "link", "add", rawBridge, "type", "bridge"); err != nil {
		return nil, err
	}
	e.onExit("delete link "+rawBridge, func() error { return delLink(e.rawNS, rawBridge) })
	if err := ipIn(e.rawNS, "tuntap", "add", "dev", rawTAP, "mode", "tap", "vnet_hdr"); err != nil {
		return nil, err
	}
	e.onExit("delete link "+rawTAP, func() error { return delLink(e.rawNS, rawTAP) })
	for _, args := range [][]string{
		{"addr", "add", fmt.Sprintf("%s/%d", rawGW, rawNet.Bits()), "dev", rawBridge},
		{"link", "set", rawBridge, "up"},
		{"link", "set", rawTAP, "master", rawBridge},
		{"link", "set", rawTAP, "up"},
	} {
		if err := ipIn(e.rawNS, args...); err != nil {
			return nil, err
		}
	}
	// IPv6 off on the bridge, as mvm does on its own.
	if err := run(ctx, "ip", "netns", "exec", e.rawNS, "sysctl", "-qw", "net.ipv6.conf."+rawBridge+".disable_ipv6=1"); err != nil {
		return nil, err
	}

	// mvm's networks. Registered before creation: rm -f of one that was
	// never made is harmless.
	m.nets = append(m.nets, netBridge)
	if _, err := m.run(ctx, time.Minute, "network", "create", netBridge, "--mode", "bridge"); err != nil {
		return nil, err
	}
	m.nets = append(m.nets, netUser)
	if _, err := m.run(ctx, time.Minute, "network", "create", netUser, "--mode", "user"); err != nil {
		return nil, err
	}
	b, err := m.run(ctx, time.Minute, "--json", "network", "inspect", netBridge)
	if err != nil {
		return nil, err
	}
	var brNet struct {
		Subnet, Gateway, Bridge string
		MTU                     int
	}
	if err := json.Unmarshal(b, &brNet); err != nil {
		return nil, fmt.Errorf("network inspect %s: %w", netBridge, err)
	}
	mvmNet, err := netip.ParsePrefix(brNet.Subnet)
	if err != nil || brNet.Bridge == "" {
		return nil, fmt.Errorf("network %s: subnet %q bridge %q", netBridge, brNet.Subnet, brNet.Bridge)
	}
	mtu := brNet.MTU
	if mtu == 0 {
		mtu = 1500
	}
	mvmSink := lastHost(mvmNet)
	if err := ipIn(e.rawNS, "link", "set", rawBridge, "mtu", fmt.Sprint(mtu)); err != nil {
		return nil, err
	}
	if err := e.veth(e.ns, "nbp0", "nbs0", brNet.Bridge, fmt.Sprintf("%s/%d", mvmSink, mvmNet.Bits()), mtu); err != nil {
		return nil, err
	}
	if err := e.veth(e.rawNS, "nbp1", "nbs1", rawBridge, fmt.Sprintf("%s/%d", rawSink, rawNet.Bits()), mtu); err != nil {
		return nil, err
	}
	for _, ip := range []netip.Addr{mvmSink, rawSink} {
		if err := s.listen(&e.sinkH, ip.String()); err != nil {
			return nil, err
		}
	}
	// User mode: slirp dials the host's loopback in QEMU's namespace.
	for _, h := range []*netns.NsHandle{&e.nsH, &e.rawH} {
		if err := s.listen(h, "127.0.0.1"); err != nil {
			return nil, err
		}
	}

	rep := &report{StreamMiB: o.sizeMiB, Runs: o.runs, Connects: o.connects, TargetRatio: 0.9, Method: method}

	k := &kernelInfo{modulesDir: o.modulesDir}
	bridged := modeSpec{
		name: "bridge", vm: "nb-bridge", network: netBridge,
		mvmSink: mvmSink.String(), sinkHost: "sink namespace, veth on the bridge",
		netdev: withTAP(rawTAP),
		rawGuest: func(mtu int) guestNet {
			return guestNet{CIDR: fmt.Sprintf("%s/%d", rawGW.Next(), rawNet.Bits()), Gateway: rawGW.String(), MTU: mtu, Sink: rawSink.String()}
		},
		checkIP: func(ip string) error {
			if ip == mvmSink.String() {
				return fmt.Errorf("mvm gave the VM the sink's address %s", ip)
			}
			return nil
		},
	}
	user := modeSpec{
		name: "user", vm: "nb-user", network: netUser,
		mvmSink: userSinkIP, sinkHost: "127.0.0.1 in QEMU's namespace",
		rawGuest: func(mtu int) guestNet {
			return guestNet{CIDR: "10.0.2.15/24", Gateway: userSinkIP, MTU: mtu, Sink: userSinkIP}
		},
	}
	for _, sp := range []modeSpec{bridged, user} {
		e.logf("%s: mvm and raw QEMU, interleaved", sp.name)
		mr, err := measureMode(ctx, e, m, s, w, o, sp, probe, busybox, k)
		if err != nil {
			return nil, fmt.Errorf("%s mode: %w", sp.name, err)
		}
		rep.Modes = append(rep.Modes, mr)
	}
	rep.Kernel, rep.Accel = k.release, k.accel

	// up → ready: none, bridge, user, interleaved, after one warm-up.
	e.logf("up timings")
	if _, err := m.up(ctx, "nb-warm", "none", o.image); err != nil {
		return nil, err
	}
	if err := m.rm(ctx, "nb-warm"); err != nil {
		return nil, err
	}
	rep.Up = upReport{Iterations: o.n, TargetDeltaMs: 100}
	var none, br, us []time.Duration
	for i := 0; i < o.n; i++ {
		for _, c := range []struct {
			net string
			dst *[]time.Duration
		}{{"none", &none}, {netBridge, &br}, {netUser, &us}} {
			name := fmt.Sprintf("nb-up-%d-%s", i, c.net)
			d, err := m.up(ctx, name, c.net, o.image)
			if err != nil {
				return nil, err
			}
			*c.dst = append(*c.dst, d)
			if err := m.rm(ctx, name); err != nil {
				return nil, err
			}
		}
	}
	rep.Up.NoneS, rep.Up.BridgeS, rep.Up.UserS = secs(none), secs(br), secs(us)
	rep.Up.NoneMedianS, rep.Up.BridgeMedianS, rep.Up.UserMedianS = median(rep.Up.NoneS), median(rep.Up.BridgeS), median(rep.Up.UserS)
	rep.Up.BridgeDeltaMs = round((rep.Up.BridgeMedianS - rep.Up.NoneMedianS) * 1000)
	rep.Up.UserDeltaMs = round((rep.Up.UserMedianS - rep.Up.NoneMedianS) * 1000)
	return rep, nil
}

// measured is one side's raw numbers before they become a side.
type measured struct {
	streams   []stream
	connectUs []float64
	clock     string // guest clock source the probe timed with
	mtu       int
	argv      []string // raw QEMU's
}

func (x measured) side() side {
	var sd side
	for _, st := range x.streams {
		sd.RunsMBps = append(sd.RunsMBps, round2(st.MBps()))
		sd.StreamBytes = st.Bytes
	}
	sd.ThroughputMBps = median(sd.RunsMBps)
	for _, us := range x.connectUs {
		sd.ConnectMs = append(sd.ConnectMs, round3(us/1000))
	}
	sd.ConnectP50Ms = median(sd.ConnectMs)
	sd.ConnectP95Ms = percentile(sd.ConnectMs, 95)
	sd.GuestClock = x.clock
	return sd
}

func mode(name, sink, host, netdev string, a, b measured) modeReport {
	r := modeReport{Mode: name, Sink: sink, SinkHost: host, Netdev: netdev, MVM: a.side(), Raw: b.side()}
	r.TputRatio = ratio(r.MVM.ThroughputMBps, r.Raw.ThroughputMBps)
	r.P50Ratio = ratio(r.Raw.ConnectP50Ms, r.MVM.ConnectP50Ms)
	r.P95Ratio = ratio(r.Raw.ConnectP95Ms, r.MVM.ConnectP95Ms)
	return r
}

// modeSpec is one network mode as both systems see it.
type modeSpec struct {
	name, vm, network string
	mvmSink           string                 // the sink's address as mvm's guest dials it
	sinkHost          string                 // where the sink really is
	netdev            func(string) string    // raw QEMU's -netdev from mvm's
	rawGuest          func(mtu int) guestNet // raw guest's eth0 and sink
	checkIP           func(string) error
}

// kernelInfo is the guest kernel mvm booted and the modules the baseline
// loads for it, resolved once from the first VM's argv.
type kernelInfo struct {
	modulesDir     string
	release, accel string
	mods           []moduleFile
}

func (k *kernelInfo) resolve(argv []string) error {
	if k.mods != nil {
		return nil
	}
	kver, err := kernelRelease(argValue(argv, "-kernel"))
	if err != nil {
		return err
	}
	k.release, k.accel = kver, argValue(argv, "-accel")
	if k.modulesDir == "" {
		k.modulesDir = filepath.Join("/lib/modules", kver)
	}
	// virtio_mmio finds the devices (microvm announces them through ACPI),
	// virtio_net drives the NIC; their dependencies come along.
	k.mods, err = resolveModules(k.modulesDir, []string{"virtio_mmio", "virtio_net"})
	return err
}

// measureMode boots mvm's VM on the mode's network and raw QEMU with the
// same kernel and netdev, both kept up, and runs the workload's rounds
// alternately on the two (ABBA: the order flips every round), so drift in
// the host's load hits both alike. Only one guest works at any time: the
// raw guest waits at its gate while mvm's runs, and mvm's is idle while
// the raw one runs. Both VMs are removed before it returns.
func measureMode(ctx context.Context, e *env, m *mvm, s *sink, w workload, o options, sp modeSpec, probe, busybox string, k *kernelInfo) (modeReport, error) {
	var mv, rv measured
	if _, err := m.up(ctx, sp.vm, sp.network, o.image); err != nil {
		return modeReport{}, err
	}
	argv, err := m.argv(sp.vm)
	if err != nil {
		return modeReport{}, err
	}
	if err := k.resolve(argv); err != nil {
		return modeReport{}, err
	}
	w.TSCKHz = tscKHz(argv)
	out, err := m.sh(ctx, sp.vm, "ip -4 -o addr show dev eth0; cat /sys/class/net/eth0/mtu")
	if err != nil {
		return modeReport{}, err
	}
	fields := strings.Fields(string(out))
	if len(fields) < 5 {
		return modeReport{}, fmt.Errorf("VM %s: unexpected eth0 state %q", sp.vm, out)
	}
	ip, _, _ := strings.Cut(fields[3], "/")
	if mv.mtu, err = strconv.Atoi(fields[len(fields)-1]); err != nil {
		return modeReport{}, fmt.Errorf("VM %s: eth0 MTU %q", sp.vm, fields[len(fields)-1])
	}
	if sp.checkIP != nil {
		if err := sp.checkIP(ip); err != nil {
			return modeReport{}, err
		}
	}
	if err := m.installProbe(ctx, sp.vm, probe); err != nil {
		return modeReport{}, err
	}

	// The baseline: same kernel, command line, machine and netdev; the
	// guest's MTU is the one mvm's agent gave eth0.
	g := sp.rawGuest(mv.mtu)
	rv.mtu = g.MTU
	initrd := filepath.Join(e.dir, "raw-"+sp.name+".cpio")
	if err := buildInitramfs(initrd, busybox, probe, k.mods, initScript(k.mods, g, w)); err != nil {
		return modeReport{}, err
	}
	serial := filepath.Join(e.dir, "raw-"+sp.name+".log")
	memPath := ""
	if o.rawMemFile {
		memPath = filepath.Join(e.dir, "raw-"+sp.name+".mem")
	}
	if rv.argv, err = rawArgv(argv, initrd, serial, sp.netdev, memPath); err != nil {
		return modeReport{}, err
	}
	e.logf("raw argv: %s", strings.Join(rv.argv, " "))
	s.drain()
	raw, err := startRaw(ctx, e, rv.argv, serial, s)
	if err != nil {
		return modeReport{}, err
	}
	defer raw.stop()

	mvmStream := func() error {
		if _, err := m.sh(ctx, sp.vm, w.streamCmd(sp.mvmSink)); err != nil {
			return err
		}
		st, err := s.next(ctx, nil, 30*time.Second)
		if err != nil {
			return fmt.Errorf("VM %s stream: %w", sp.vm, err)
		}
		mv.streams = append(mv.streams, st)
		return nil
	}
	mvmConnects := func(n int) error {
		out, err := m.sh(ctx, sp.vm, "/tmp/nbprobe "+strings.Join(w.probeArgs(sp.mvmSink, n), " "))
		if err != nil {
			return err
		}
		p, err := parseProbe(string(out))
		if err != nil {
			return fmt.Errorf("VM %s: %w", sp.vm, err)
		}
		mv.clock, mv.connectUs = p.Clock, append(mv.connectUs, p.Connect...)
		return nil
	}
	rawStream := func() error {
		st, err := raw.step(ctx, true)
		rv.streams = append(rv.streams, st)
		return err
	}
	rawConnects := func(int) error {
		_, err := raw.step(ctx, false)
		return err
	}
	for r := 0; r < w.Runs; r++ {
		streams := []func() error{mvmStream, rawStream}
		connects := []func(int) error{mvmConnects, rawConnects}
		if r%2 == 1 {
			streams[0], streams[1] = streams[1], streams[0]
			connects[0], connects[1] = connects[1], connects[0]
		}
		for _, f := range streams {
			if err := f(); err != nil {
				return modeReport{}, err
			}
		}
		if n := w.batch(r); n > 0 {
			for _, f := range connects {
				if err := f(n); err != nil {
					return modeReport{}, err
				}
			}
		}
	}
	log, err := raw.finish(ctx)
	if err != nil {
		return modeReport{}, err
	}
	for _, l := range strings.Split(string(log), "\n") {
		l = strings.TrimSpace(l)
		if strings.Contains(l, "clocksource") || strings.HasPrefix(l, "NBRAW") {
			e.logf("raw %s serial: %s", sp.name, l)
		}
		if strings.HasPrefix(l, "NBPROBE ") {
			p, err := parseProbe(l)
			if err != nil {
				return modeReport{}, fmt.Errorf("raw guest: %w", err)
			}
			rv.clock, rv.connectUs = p.Clock, append(rv.connectUs, p.Connect...)
		}
	}
	if len(rv.connectUs) != len(mv.connectUs) {
		return modeReport{}, fmt.Errorf("raw guest reported %d connects, mvm's %d; serial log:\n%s", len(rv.connectUs), len(mv.connectUs), log)
	}
	if err := m.rm(ctx, sp.vm); err != nil {
		return modeReport{}, err
	}
	r := mode(sp.name, sp.mvmSink, sp.sinkHost, argValue(rv.argv, "-netdev"), mv, rv)
	r.RawArgv = rv.argv
	return r, nil
}

func buildProbe(ctx context.Context, dst string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags", "-s -w", "-o", dst, "github.com/mvm-dev/mvm/bench/net/probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the guest probe (run from the repository, or pass -probe): %v\n%s", err, out)
	}
	return nil
}

// probeOut is one probe run's result line: the guest's clock source and
// the samples in µs (resolve and total only with -resolve).
type probeOut struct {
	Clock                   string
	Connect, Resolve, Total []float64
	Retries                 int
}

// parseProbe reads the probe's "NBPROBE clock=C connect_us=..." line.
func parseProbe(out string) (probeOut, error) {
	for _, l := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(l), "NBPROBE ")
		if !ok {
			continue
		}
		var p probeOut
		for _, kv := range strings.Fields(rest) {
			k, v, _ := strings.Cut(kv, "=")
			var dst *[]float64
			switch k {
			case "clock":
				p.Clock = v
				continue
			case "retries":
				n, err := strconv.Atoi(v)
				if err != nil {
					return p, fmt.Errorf("probe: bad retries %q", v)
				}
				p.Retries = n
				continue
			case "connect_us":
				dst = &p.Connect
			case "resolve_us":
				dst = &p.Resolve
			case "total_us":
				dst = &p.Total
			default:
				return p, fmt.Errorf("probe: %s", rest)
			}
			for _, f := range strings.Split(v, ",") {
				x, err := strconv.ParseFloat(f, 64)
				if err != nil {
					return p, fmt.Errorf("probe: bad sample %q in %s", f, k)
				}
				*dst = append(*dst, x)
			}
		}
		if p.Connect == nil {
			return p, fmt.Errorf("probe: no samples in %q", l)
		}
		return p, nil
	}
	return probeOut{}, fmt.Errorf("probe printed no result: %q", out)
}

func argValue(argv []string, flag string) string {
	for i, a := range argv {
		if a == flag && i+1 < len(argv) {
			return argv[i+1]
		}
	}
	return ""
}

// lastHost is the subnet's highest address below broadcast.
func lastHost(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	v--
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func secs(d []time.Duration) []float64 {
	var out []float64
	for _, v := range d {
		out = append(out, round3(v.Seconds()))
	}
	return out
}

// median is the middle value (the mean of the two middle ones for an
// even count).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if n := len(s); n%2 == 0 {
		return round3((s[n/2-1] + s[n/2]) / 2)
	}
	return s[len(s)/2]
}

// percentile is the nearest-rank percentile.
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	if k < 0 {
		k = 0
	}
	return s[k]
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return round3(a / b)
}

func round(v float64) float64  { return math.Round(v) }
func round2(v float64) float64 { return math.Round(v*100) / 100 }
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISS"
}

func printTable(f *os.File, r *report) {
	fmt.Fprintf(f, "bench/net: kernel %s, accel %s; %d × %d MiB dd|nc streams and %d connects per VM; up n=%d\n",
		r.Kernel, r.Accel, r.Runs, r.StreamMiB, r.Connects, r.Up.Iterations)
	tw := tabwriter.NewWriter(f, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MODE\tMETRIC\tMVM\tRAW QEMU\tRATIO\tTARGET")
	for _, m := range r.Modes {
		fmt.Fprintf(tw, "%s\tthroughput MB/s (median)\t%.2f\t%.2f\t%.3f\t≥ %.2f %s\n", m.Mode, m.MVM.ThroughputMBps, m.Raw.ThroughputMBps, m.TputRatio, r.TargetRatio, verdict(m.TputRatio >= r.TargetRatio))
		fmt.Fprintf(tw, "%s\tconnect p50 ms\t%.3f\t%.3f\t%.3f\t≥ %.2f %s\n", m.Mode, m.MVM.ConnectP50Ms, m.Raw.ConnectP50Ms, m.P50Ratio, r.TargetRatio, verdict(m.P50Ratio >= r.TargetRatio))
		fmt.Fprintf(tw, "%s\tconnect p95 ms\t%.3f\t%.3f\t%.3f\t≥ %.2f %s\n", m.Mode, m.MVM.ConnectP95Ms, m.Raw.ConnectP95Ms, m.P95Ratio, r.TargetRatio, verdict(m.P95Ratio >= r.TargetRatio))
	}
	_ = tw.Flush()
	fmt.Fprintln(f, "ratio: throughput mvm/raw, latency raw/mvm (≥ 1: mvm at least as good)")
	for _, m := range r.Modes {
		fmt.Fprintf(f, "  %s runs MB/s: mvm %v raw %v; guest clock mvm %s raw %s\n", m.Mode, m.MVM.RunsMBps, m.Raw.RunsMBps, m.MVM.GuestClock, m.Raw.GuestClock)
		fmt.Fprintf(f, "  %s sink %s (%s); netdev %s\n", m.Mode, m.Sink, m.SinkHost, m.Netdev)
	}
	u := r.Up
	fmt.Fprintf(f, "up → ready (median of %d): none %.3fs, bridge %.3fs (%+.0f ms %s), user %.3fs (%+.0f ms %s); target ≤ +%.0f ms\n",
		u.Iterations, u.NoneMedianS, u.BridgeMedianS, u.BridgeDeltaMs, verdict(u.BridgeDeltaMs <= u.TargetDeltaMs),
		u.UserMedianS, u.UserDeltaMs, verdict(u.UserDeltaMs <= u.TargetDeltaMs), u.TargetDeltaMs)
	fmt.Fprintf(f, "  none %v  bridge %v  user %v\n", u.NoneS, u.BridgeS, u.UserS)
}
