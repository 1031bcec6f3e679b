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
// With -wait ADDR it is the raw guest's gate instead: it connects (retrying
// for a minute), reads until the bench closes the connection and exits, so
// the bench decides when the guest runs its next step.
//
// Output is one line: "NBPROBE clock=CLOCKSOURCE connect_us=V1,V2,..." (or
// "NBPROBE error=..."); the clock source is the guest kernel's current one,
// so a coarse clock (jiffies) shows instead of passing as 0 µs connects.
package main

import (
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
	flag.Parse()
	if *wait != "" {
		if err := gate(*wait); err != nil {
			fmt.Printf("NBPROBE error=%s\n", strings.ReplaceAll(err.Error(), " ", "_"))
			os.Exit(1)
		}
		return
	}
	if _, err := run(*addr, *warmup, *gap); err != nil && *warmup > 0 {
		fmt.Printf("NBPROBE error=%s\n", strings.ReplaceAll(err.Error(), " ", "_"))
		os.Exit(1)
	}
	us, err := run(*addr, *n, *gap)
	if err != nil {
		fmt.Printf("NBPROBE error=%s\n", strings.ReplaceAll(err.Error(), " ", "_"))
		os.Exit(1)
	}
	cs := "unknown"
	if b, err := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource"); err == nil {
		cs = strings.TrimSpace(string(b))
	}
	fmt.Printf("NBPROBE clock=%s connect_us=%s\n", cs, strings.Join(us, ","))
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

func run(addr string, n int, gap time.Duration) ([]string, error) {
	sa, err := sockaddr(addr)
	if err != nil {
		return nil, err
	}
	var out []string
	for i := 0; i < n; i++ {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("socket: %w", err)
		}
		t0 := time.Now()
		err = syscall.Connect(fd, sa)
		d := time.Since(t0)
		syscall.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("connect %s (#%d): %w", addr, i+1, err)
		}
		out = append(out, fmt.Sprint(d.Microseconds()))
		time.Sleep(gap)
	}
	return out, nil
}
