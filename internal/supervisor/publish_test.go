package supervisor

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// All traffic in these tests stays on 127.0.0.1.

const ioWait = 10 * time.Second // deadline on every test read

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// allowPortZero lets specs ask for a free host port, as only tests may.
func allowPortZero(t *testing.T) {
	old := minListenPort
	minListenPort = 0
	t.Cleanup(func() { minListenPort = old })
}

// servePublish binds and serves specs until the test ends.
func servePublish(t *testing.T, ctx context.Context, specs ...Publish) (*publisher, func()) {
	t.Helper()
	allowPortZero(t)
	p, err := bindPublish(specs, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	stop := p.serve(ctx)
	t.Cleanup(stop)
	return p, stop
}

// tcpTarget stands in for the guest's service: handle runs per connection.
func tcpTarget(t *testing.T, handle func(*net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go acceptEach(ln, handle)
	return ln.Addr().String()
}

func acceptEach(ln net.Listener, handle func(*net.TCPConn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(ioWait))
			handle(c.(*net.TCPConn))
		}()
	}
}

// echoThenBye echoes until the client half-closes, then still replies.
func echoThenBye(c *net.TCPConn) {
	if _, err := io.Copy(c, c); err == nil {
		c.Write([]byte("bye"))
	}
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T, proto string) string {
	t.Helper()
	var c io.Closer
	var addr string
	if proto == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, addr = pc, pc.LocalAddr().String()
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c, addr = ln, ln.Addr().String()
	}
	c.Close()
	return addr
}

func dialTCP(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ioWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(ioWait))
	return c.(*net.TCPConn)
}

func TestPublishValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Publish
		want string
	}{
		{"proto", Publish{"sctp", "127.0.0.1:8080", "10.88.0.5:80"}, "want tcp or udp"},
		{"proto case", Publish{"TCP", "127.0.0.1:8080", "10.88.0.5:80"}, "want tcp or udp"},
		{"listen without port", Publish{"tcp", "127.0.0.1", "10.88.0.5:80"}, "missing port"},
		{"named port", Publish{"tcp", "127.0.0.1:http", "10.88.0.5:80"}, "want a number 1-65535"},
		{"listen port 0", Publish{"tcp", "127.0.0.1:0", "10.88.0.5:80"}, "want a number 1-65535"},
		{"port too big", Publish{"udp", "127.0.0.1:65536", "10.88.0.5:53"}, "want a number 1-65535"},
		{"negative port", Publish{"udp", "127.0.0.1:-1", "10.88.0.5:53"}, "want a number 1-65535"},
		{"target port 0", Publish{"tcp", "127.0.0.1:8080", "10.88.0.5:0"}, "want a number 1-65535"},
		{"target without host", Publish{"tcp", "127.0.0.1:8080", ":80"}, "no host"},
		{"empty target", Publish{"udp", "127.0.0.1:8080", ""}, "target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Validation comes before any bind: nothing here is bound.
			_, err := bindPublish([]Publish{tc.spec}, quietLog())
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "publish") {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// Data goes both ways, and the client's half-close reaches the guest as EOF
// while the guest's reply still comes back.
func TestPublishTCPHalfClose(t *testing.T) {
	target := tcpTarget(t, echoThenBye)
	p, _ := servePublish(t, context.Background(), Publish{"tcp", "127.0.0.1:0", target})
	for _, tc := range []struct {
		name string
		msg  []byte
	}{
		{"small", []byte("hello")},
		{"large", bytes.Repeat([]byte("0123456789abcdef"), 1<<16)}, // 1 MiB
		{"empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialTCP(t, p.Addrs()[0].String())
			wrote := make(chan error, 1)
			go func() {
				_, err := c.Write(tc.msg)
				if err == nil {
					err = c.CloseWrite()
				}
				wrote <- err
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-wrote; err != nil {
				t.Fatal(err)
			}
			if want := append(append([]byte{}, tc.msg...), "bye"...); !bytes.Equal(got, want) {
				t.Fatalf("got %d bytes %.20q…, want %d", len(got), got, len(want))
			}
		})
	}
	// Interactive use: the echo comes back before anything is closed.
	c := dialTCP(t, p.Addrs()[0].String())
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q, %v", buf, err)
	}
}

// A guest service that comes up after the client connected is still
// reached: the dial is retried.
func TestPublishTCPLateTarget(t *testing.T) {
	target := freeAddr(t, "tcp")
	p, _ := servePublish(t, context.Background(), Publish{"tcp", "127.0.0.1:0", target})
	up := make(chan error, 1)
	time.AfterFunc(300*time.Millisecond, func() {
		ln, err := net.Listen("tcp", target)
		if err != nil {
			up <- err
			return
		}
		t.Cleanup(func() { ln.Close() })
		go acceptEach(ln, func(c *net.TCPConn) { c.Write([]byte("late")) })
		up <- nil
	})
	c := dialTCP(t, p.Addrs()[0].String())
	start := time.Now()
	got, err := io.ReadAll(c)
	if lerr := <-up; lerr != nil {
		t.Skipf("target port taken meanwhile: %v", lerr)
	}
	if err != nil || string(got) != "late" {
		t.Fatalf("got %q, %v after %v", got, err, time.Since(start))
	}
}

// A host port already in use fails the bind with an error naming it, and
// whatever was bound before it is released.
func TestPublishPortTaken(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			var taken string
			if proto == "tcp" {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				taken = ln.Addr().String()
			} else {
				pc, err := net.ListenPacket("udp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer pc.Close()
				taken = pc.LocalAddr().String()
			}
			first := freeAddr(t, proto)
			_, err := bindPublish([]Publish{
				{proto, first, "127.0.0.1:9"},
				{proto, taken, "127.0.0.1:9"},
			}, quietLog())
			if err == nil || !strings.Contains(err.Error(), taken) || !strings.Contains(err.Error(), "already taken") {
				t.Fatalf("err = %v, want %s named as already taken", err, taken)
			}
			if !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("err = %v, want it to wrap EADDRINUSE", err)
			}
			// The first port was bound and must have been let go.
			var c io.Closer
			if proto == "tcp" {
				c, err = net.Listen("tcp", first)
			} else {
				c, err = net.ListenPacket("udp", first)
			}
			if err != nil {
				t.Fatalf("%s still held after the failed bind: %v", first, err)
			}
			c.Close()
		})
	}
}

// udpTarget answers each datagram with the sender's address and the data,
// so a test sees which flow socket carried it.
func udpTarget(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(from.String()+" "), buf[:n]...), from)
		}
	}()
	return pc.LocalAddr().String()
}

// udpAsk sends msg and returns the flow address the target saw and the
// echoed data.
func udpAsk(t *testing.T, c *net.UDPConn, msg string) (from, data string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	return udpReply(t, c)
}

func udpReply(t *testing.T, c *net.UDPConn) (from, data string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(ioWait))
	buf := make([]byte, maxDatagram)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	from, data, _ = strings.Cut(string(buf[:n]), " ")
	return from, data
}

func udpClient(t *testing.T, addr net.Addr) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, addr.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func flowCount(u *udpPublish) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.flows)
}

// Two clients each get their own replies, through flows of their own.
func TestPublishUDP(t *testing.T) {
	p, _ := servePublish(t, context.Background(), Publish{"udp", "127.0.0.1:0", udpTarget(t)})
	a, b := udpClient(t, p.Addrs()[0]), udpClient(t, p.Addrs()[0])
	big := strings.Repeat("x", 60000)
	var fromA, fromB string
	for _, tc := range []struct{ a, b string }{{"a1", "b1"}, {"a2", "b2"}, {big + "a", big + "b"}} {
		// Both ask before either reads, so the replies could be crossed.
		a.Write([]byte(tc.a))
		b.Write([]byte(tc.b))
		fa, da := udpReply(t, a)
		fb, db := udpReply(t, b)
		if da != tc.a || db != tc.b {
			t.Fatalf("replies %.10q… / %.10q…, want %.10q… / %.10q…", da, db, tc.a, tc.b)
		}
		if fromA == "" {
			fromA, fromB = fa, fb
		}
		if fa != fromA || fb != fromB || fa == fb {
			t.Fatalf("flows %s / %s, want two steady ones (%s / %s)", fa, fb, fromA, fromB)
		}
	}
	if n := flowCount(p.udp[0]); n != 2 {
		t.Fatalf("%d flows, want 2", n)
	}
}

// A guest UDP port that is closed at first (the guest answers with port
// unreachable) does not end the flow: once it opens, replies flow.
func TestPublishUDPLateTarget(t *testing.T) {
	target := freeAddr(t, "udp")
	p, _ := servePublish(t, context.Background(), Publish{"udp", "127.0.0.1:0", target})
	c := udpClient(t, p.Addrs()[0])
	c.Write([]byte("early"))
	time.Sleep(100 * time.Millisecond) // the refusal reaches the flow
	if n := flowCount(p.udp[0]); n != 1 {
		t.Fatalf("%d flows after a refusal, want 1", n)
	}
	pc, err := net.ListenPacket("udp", target)
	if err != nil {
		t.Skipf("target port taken meanwhile: %v", err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 64)
		pc.SetReadDeadline(time.Now().Add(ioWait))
		n, from, err := pc.ReadFrom(buf)
		if err == nil {
			pc.WriteTo(append([]byte("guest "), buf[:n]...), from)
		}
	}()
	if _, data := udpAsk(t, c, "later"); data != "later" {
		t.Fatalf("got %q", data)
	}
}

// A flow in use is kept; an idle one is closed, and the client's next
// datagram starts a new one.
func TestPublishUDPIdle(t *testing.T) {
	old := udpFlowIdle
	udpFlowIdle = 200 * time.Millisecond
	t.Cleanup(func() { udpFlowIdle = old })
	p, _ := servePublish(t, context.Background(), Publish{"udp", "127.0.0.1:0", udpTarget(t)})
	c := udpClient(t, p.Addrs()[0])
	first, _ := udpAsk(t, c, "hi")
	for end := time.Now().Add(3 * udpFlowIdle); time.Now().Before(end); {
		if from, _ := udpAsk(t, c, "again"); from != first {
			t.Fatalf("active flow replaced: %s, then %s", first, from)
		}
		time.Sleep(udpFlowIdle / 4)
	}
	deadline := time.Now().Add(ioWait)
	for flowCount(p.udp[0]) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle flow never expired")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, data := udpAsk(t, c, "back"); data != "back" {
		t.Fatalf("after expiry got %q", data)
	}
	if n := flowCount(p.udp[0]); n != 1 {
		t.Fatalf("%d flows, want 1", n)
	}
}

// Beyond the limits new clients are turned away while existing ones are
// served.
func TestPublishLimits(t *testing.T) {
	oldConns, oldFlows := maxTCPConns, maxUDPFlows
	maxTCPConns, maxUDPFlows = 1, 1
	t.Cleanup(func() { maxTCPConns, maxUDPFlows = oldConns, oldFlows })
	p, _ := servePublish(t, context.Background(),
		Publish{"tcp", "127.0.0.1:0", tcpTarget(t, echoThenBye)},
		Publish{"udp", "127.0.0.1:0", udpTarget(t)})
	for _, tc := range []struct {
		proto string
		check func(t *testing.T)
	}{
		{"tcp", func(t *testing.T) {
			first := dialTCP(t, p.Addrs()[0].String())
			first.Write([]byte("1"))
			if _, err := io.ReadFull(first, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			second := dialTCP(t, p.Addrs()[0].String())
			if b, err := io.ReadAll(second); err != nil || len(b) != 0 {
				t.Fatalf("second connection: %q, %v; want closed at once", b, err)
			}
		}},
		{"udp", func(t *testing.T) {
			udpAsk(t, udpClient(t, p.Addrs()[1]), "1")
			second := udpClient(t, p.Addrs()[1])
			second.Write([]byte("2"))
			second.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if n, err := second.Read(make([]byte, 64)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("second client got %d bytes, %v; want its datagram dropped", n, err)
			}
		}},
	} {
		t.Run(tc.proto, tc.check)
	}
}

// stop, or the supervisor's context ending, closes the listeners and ends
// the connections in progress, however idle.
func TestPublishStop(t *testing.T) {
	for _, how := range []string{"stop", "context"} {
		t.Run(how, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p, stop := servePublish(t, ctx,
				Publish{"tcp", "127.0.0.1:0", tcpTarget(t, echoThenBye)},
				Publish{"udp", "127.0.0.1:0", udpTarget(t)})
			tcpAddr, udpAddr := p.Addrs()[0].String(), p.Addrs()[1].String()
			c := dialTCP(t, tcpAddr)
			c.Write([]byte("hi"))
			if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
				t.Fatal(err)
			}
			udpAsk(t, udpClient(t, p.Addrs()[1]), "hi")

			if how == "stop" {
				done := make(chan struct{})
				go func() { stop(); close(done) }()
				select {
				case <-done:
				case <-time.After(ioWait):
					t.Fatal("stop hung")
				}
			} else {
				cancel()
			}
			// The idle connection ends (EOF or reset), well before its deadline.
			if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("connection still open after %s: %v", how, err)
			}
			if how == "context" {
				stop()
			}
			if d, err := net.DialTimeout("tcp", tcpAddr, ioWait); err == nil {
				d.Close()
				t.Fatalf("%s still accepts", tcpAddr)
			}
			// Both host ports are free again.
			ln, err := net.Listen("tcp", tcpAddr)
			if err != nil {
				t.Fatalf("tcp port held: %v", err)
			}
			ln.Close()
			pc, err := net.ListenPacket("udp", udpAddr)
			if err != nil {
				t.Fatalf("udp port held: %v", err)
			}
			pc.Close()
		})
	}
}

// A published port that is taken fails the supervisor before the VMM
// starts, recorded like a VMM that cannot start.
func TestLaunchPublishPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().String()
	dir := t.TempDir()
	ran := filepath.Join(dir, "vmm-ran")
	if _, err := Launch(context.Background(), dir, Config{
		Argv:    []string{"/bin/sh", "-c", ": > " + ran + "; sleep 60"},
		VMMLog:  filepath.Join(dir, "vmm.log"),
		Publish: []Publish{{"tcp", taken, "127.0.0.1:9"}},
	}); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, ExitFile), ioWait)
	ex, err := ReadExit(dir)
	if err != nil || ex.Code != -1 || !strings.Contains(ex.Error, taken) || !strings.Contains(ex.Error, "already taken") {
		t.Fatalf("exit = %+v, %v; want the taken port %s", ex, err, taken)
	}
	if pids, _ := ReadPids(dir); pids.VMM.Pid != 0 {
		t.Fatalf("vmm recorded as started: %+v", pids)
	}
	time.Sleep(200 * time.Millisecond) // a started VMM would have written by now
	if _, err := os.Stat(ran); !os.IsNotExist(err) {
		t.Fatalf("the VMM ran: %v", err)
	}
}

// A running supervisor serves its published ports and frees them by the
// time the exit is recorded.
func TestLaunchPublishServes(t *testing.T) {
	target := tcpTarget(t, echoThenBye)
	listen := freeAddr(t, "tcp")
	dir := t.TempDir()
	pid, err := Launch(context.Background(), dir, Config{
		Argv:      []string{"/bin/sleep", "60"},
		VMMLog:    filepath.Join(dir, "vmm.log"),
		QMPSocket: filepath.Join(dir, "no-qmp.sock"), // unreachable: stop by signal
		Publish:   []Publish{{"tcp", listen, target}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Only if the test failed early; Signal never hits a recycled pid.
		if p, err := ReadPids(dir); err == nil {
			p.Supervisor.Signal(syscall.SIGKILL)
		}
	})
	var c net.Conn
	for deadline := time.Now().Add(ioWait); ; time.Sleep(20 * time.Millisecond) {
		if c, err = net.DialTimeout("tcp", listen, ioWait); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("published port never bound: %v", err)
		}
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioWait))
	c.Write([]byte("up"))
	c.(*net.TCPConn).CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "upbye" {
		t.Fatalf("through the supervisor: %q, %v", got, err)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, ExitFile), 2*ioWait)
	again, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("port still held once the exit was recorded: %v", err)
	}
	again.Close()
}
