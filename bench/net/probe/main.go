// Command probe is bench/net's guest-side connect timer. It is built static
// (CGO_ENABLED=0) by the bench and copied into the guest, mvm's and raw
// QEMU's alike, because busybox has no sub-millisecond clock (Debian's
// busybox date has no %N) and timing a loop of nc processes would measure
// fork+exec under TCG rather than the network.
//
// Each sample is one blocking connect(2) on a fresh socket, timed with the
// monotonic clock: SYN out to SYN-ACK in, as the guest kernel sees it (in
// user mode that includes slirp's own connect to the host). The socket is
// closed right after; the bench's sink accepts and closes its side. One
// warm-up connect (-warmup) goes first and is not reported: it pays for
// neighbour resolution and the probe's first-touch page faults, which are
// not connect latency.
//
// With -resolve NAME each sample is a name lookup and then the connect: a
// DNS A query in one UDP datagram on a fresh socket to the first nameserver
// of /etc/resolv.conf (as a stub resolver without a cache does), and a
// connect to the first address of the answer on -port. "{i}" in NAME is
// replaced by the sample's number ("w0"... for warm-ups), so every sample
// can ask a name never asked before.
//
// With -wait ADDR it is the raw guest's gate instead: it connects (retrying
// for a minute), reads until the bench closes the connection and exits, so
// the bench decides when the guest runs its next step.
//
// With -tsc-khz RATE it times with the TSC instead of the kernel's clock:
// under TCG on a busy host the guest's clocksource watchdog may have
// marked the TSC unstable at boot and left the kernel on jiffies (4 ms
// steps), while the counter itself, the host's, still runs true.
//
// Output is one line: "NBPROBE clock=CLOCKSOURCE connect_us=V1,V2,..." (with
// -resolve also total_us=, resolve_us= and retries=; or "NBPROBE
// error=..."); the clock source is the guest kernel's current one
// ("rdtsc/CLOCKSOURCE" with -tsc-khz), so a coarse clock (jiffies) shows
// instead of passing as 0 µs connects.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "", "IPv4:port to connect to")
	n := flag.Int("n", 20, "connects")
	gap := flag.Duration("gap", 10*time.Millisecond, "pause between connects (lets the previous close finish)")
	warmup := flag.Int("warmup", 1, "connects made first and not reported (neighbour resolution, first-touch faults)")
	wait := flag.String("wait", "", "gate mode: IPv4:port to wait on")
	resolve := flag.String("resolve", "", "resolve this name (\"{i}\": the sample's number) before each connect")
	port := flag.Int("port", 0, "with -resolve: the port to connect to")
	timeout := flag.Duration("timeout", 10*time.Second, "give up on a connect after this long (a dropped SYN would block for minutes)")
	flag.Uint64Var(&tscKHz, "tsc-khz", 0, "time with the TSC at this rate (kHz) instead of the kernel's clock")
	resolver := flag.String("resolver", "", "with -resolve: IPv4 of the DNS server (default: the first nameserver of /etc/resolv.conf)")
	flag.Parse()
	fail := func(err error) {
		fmt.Printf("NBPROBE error=%s\n", strings.ReplaceAll(err.Error(), " ", "_"))
		os.Exit(1)
	}
	if tscKHz > 0 && rdtsc() == 0 {
		fail(errors.New("-tsc-khz: no TSC on this architecture"))
	}
	if *wait != "" {
		if err := gate(*wait); err != nil {
			fail(err)
		}
		return
	}
	var out string
	if *resolve != "" {
		r, err := newResolveRun(*resolve, *resolver, *port, *gap, *timeout)
		if err == nil {
			err = r.run(*warmup, true)
		}
		if err == nil {
			err = r.run(*n, false)
		}
		if err != nil {
			fail(err)
		}
		out = fmt.Sprintf("total_us=%s resolve_us=%s connect_us=%s retries=%d",
			strings.Join(r.total, ","), strings.Join(r.resolve, ","), strings.Join(r.connect, ","), r.retries)
	} else {
		if _, err := run(*addr, *warmup, *gap, *timeout); err != nil && *warmup > 0 {
			fail(err)
		}
		us, err := run(*addr, *n, *gap, *timeout)
		if err != nil {
			fail(err)
		}
		out = "connect_us=" + strings.Join(us, ",")
	}
	cs := "unknown"
	if b, err := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource"); err == nil {
		cs = strings.TrimSpace(string(b))
	}
	if tscKHz > 0 {
		cs = "rdtsc/" + cs
	}
	fmt.Printf("NBPROBE clock=%s %s\n", cs, out)
}

func sockaddr(addr string) (*syscall.SockaddrInet4, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return nil, fmt.Errorf("bad address %q: want IPv4:port", addr)
	}
	return &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}, nil
}

// gate blocks until the bench lets it go: connect, read to EOF.
func gate(addr string) error {
	sa, err := sockaddr(addr)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err = syscall.Connect(fd, sa); err == nil {
			buf := make([]byte, 64)
			for {
				n, err := syscall.Read(fd, buf)
				if err == syscall.EINTR {
					continue
				}
				if n <= 0 {
					syscall.Close(fd)
					return err
				}
			}
		}
		syscall.Close(fd)
		if time.Now().After(deadline) {
			return fmt.Errorf("gate %s: %w", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tscKHz is the TSC's rate when the samples are timed with it (-tsc-khz).
var tscKHz uint64

// stamp is a point in time on the probe's clock.
type stamp struct {
	t   time.Time
	tsc uint64
}

func now() stamp {
	if tscKHz > 0 {
		return stamp{tsc: rdtsc()}
	}
	return stamp{t: time.Now()}
}

// since is the time from s to now; TSC differences stay far from overflow
// for any sample (ticks × 10^6 < 2^64 for minutes).
func (s stamp) since() time.Duration {
	if tscKHz > 0 {
		return time.Duration((rdtsc() - s.tsc) * 1_000_000 / tscKHz)
	}
	return time.Since(s.t)
}

// dial is one timed blocking connect on a fresh socket.
func dial(sa *syscall.SockaddrInet4, timeout time.Duration) (time.Duration, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socket: %w", err)
	}
	defer syscall.Close(fd)
	// A dropped SYN would otherwise block for the kernel's two minutes.
	tv := syscall.NsecToTimeval(int64(timeout))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_SNDTIMEO, &tv); err != nil {
		return 0, fmt.Errorf("setsockopt: %w", err)
	}
	t0 := now()
	err = syscall.Connect(fd, sa)
	return t0.since(), err
}

func run(addr string, n int, gap, timeout time.Duration) ([]string, error) {
	sa, err := sockaddr(addr)
	if err != nil {
		return nil, err
	}
	var out []string
	for i := 0; i < n; i++ {
		d, err := dial(sa, timeout)
		if err != nil {
			return nil, fmt.Errorf("connect %s (#%d): %w", addr, i+1, err)
		}
		out = append(out, fmt.Sprint(d.Microseconds()))
		time.Sleep(gap)
	}
	return out, nil
}

// resolveRun is a series of resolve-then-connect samples.
type resolveRun struct {
	name     string
	server   *syscall.SockaddrInet4
	port     int
	gap      time.Duration
	timeout  time.Duration
	id       uint16
	retries  int
	total    []string // µs, query sent to connect returned
	resolve  []string
	connect  []string
	warmups  int
	reported int
}

func newResolveRun(name, server string, port int, gap, timeout time.Duration) (*resolveRun, error) {
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("-resolve needs -port")
	}
	if server == "" {
		var err error
		if server, err = nameserver("/etc/resolv.conf"); err != nil {
			return nil, err
		}
	}
	sa, err := sockaddr(server + ":53")
	if err != nil {
		return nil, err
	}
	return &resolveRun{name: name, server: sa, port: port, gap: gap, timeout: timeout, id: uint16(os.Getpid() * 7919)}, nil
}

// nameserver is the first IPv4 nameserver in a resolv.conf.
func nameserver(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil && a.Is4() {
				return f[1], nil
			}
		}
	}
	return "", fmt.Errorf("%s: no IPv4 nameserver", path)
}

// run makes n samples; warm-ups are made the same way and not kept.
func (r *resolveRun) run(n int, warm bool) error {
	for i := 0; i < n; i++ {
		label := fmt.Sprint(r.reported)
		if warm {
			label = fmt.Sprintf("w%d", r.warmups)
			r.warmups++
		} else {
			r.reported++
		}
		name := strings.ReplaceAll(r.name, "{i}", label)
		t0 := now()
		ip, err := r.lookup(name)
		if err != nil {
			return fmt.Errorf("resolve %s: %w", name, err)
		}
		tr := t0.since()
		d, err := dial(&syscall.SockaddrInet4{Port: r.port, Addr: ip}, r.timeout)
		total := t0.since()
		if err != nil {
			return fmt.Errorf("connect %s (%s): %w", netip.AddrFrom4(ip), name, err)
		}
		if !warm {
			r.total = append(r.total, fmt.Sprint(total.Microseconds()))
			r.resolve = append(r.resolve, fmt.Sprint(tr.Microseconds()))
			r.connect = append(r.connect, fmt.Sprint(d.Microseconds()))
		}
		time.Sleep(r.gap)
	}
	return nil
}

// lookup asks for name's A record, waiting a second per try, three tries
// (a lost datagram shows as a retry rather than as a failed run).
func (r *resolveRun) lookup(name string) ([4]byte, error) {
	var err error
	for try := 0; try < 3; try++ {
		if try > 0 {
			r.retries++
		}
		r.id++
		var a [4]byte
		if a, err = r.ask(name, r.id); err == nil || !errors.Is(err, syscall.EAGAIN) {
			return a, err
		}
	}
	return [4]byte{}, fmt.Errorf("no answer after 3 tries: %w", err)
}

// ask sends one query on a fresh socket and reads until the reply to it.
func (r *resolveRun) ask(name string, id uint16) ([4]byte, error) {
	q, err := query(id, name)
	if err != nil {
		return [4]byte{}, err
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return [4]byte{}, fmt.Errorf("socket: %w", err)
	}
	defer syscall.Close(fd)
	tv := syscall.NsecToTimeval(int64(time.Second))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return [4]byte{}, fmt.Errorf("setsockopt: %w", err)
	}
	// Connected: the kernel drops datagrams from anyone but the server.
	if err := syscall.Connect(fd, r.server); err != nil {
		return [4]byte{}, fmt.Errorf("connect to the resolver: %w", err)
	}
	if _, err := syscall.Write(fd, q); err != nil {
		return [4]byte{}, fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 1500)
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return [4]byte{}, err
		}
		if a, ok, err := answerA(id, buf[:n]); ok {
			return a, err
		}
	}
}

// query is a recursive DNS query for name's A record.
func query(id uint16, name string) ([]byte, error) {
	b := []byte{byte(id >> 8), byte(id), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if l == "" || len(l) > 63 {
			return nil, fmt.Errorf("bad name %q", name)
		}
		b = append(append(b, byte(len(l))), l...)
	}
	return append(b, 0, 0, 1, 0, 1), nil
}

// answerA reads a reply: ok is false when it is not the reply to id (a
// late one to an earlier try), else the first A record or why there is none.
func answerA(id uint16, p []byte) (a [4]byte, ok bool, err error) {
	be16 := func(i int) int { return int(p[i])<<8 | int(p[i+1]) }
	if len(p) < 12 || be16(0) != int(id) || p[2]&0x80 == 0 {
		return a, false, nil
	}
	if rc := p[3] & 0x0f; rc != 0 {
		return a, true, fmt.Errorf("rcode %d", rc)
	}
	off := 12
	for i := 0; i < be16(4) && off >= 0; i++ {
		if off = skipName(p, off); off >= 0 {
			off += 4 // type, class
		}
	}
	for i := 0; i < be16(6) && off >= 0; i++ {
		off = skipName(p, off)
		if off < 0 || off+10 > len(p) {
			break
		}
		typ, class, rdlen := be16(off), be16(off+2), be16(off+8)
		off += 10
		if off+rdlen > len(p) {
			break
		}
		if typ == 1 && class == 1 && rdlen == 4 {
			copy(a[:], p[off:off+4])
			return a, true, nil
		}
		off += rdlen
	}
	return a, true, errors.New("no A record in the answer")
}

// skipName returns the offset past the (possibly compressed) name at off,
// or -1 past the end.
func skipName(p []byte, off int) int {
	for off >= 0 && off < len(p) {
		switch l := int(p[off]); {
		case l == 0:
			return off + 1
		case l&0xc0 == 0xc0:
			return off + 2
		default:
			off += 1 + l
		}
	}
	return -1
}
