package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/transport/serialmux"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == Arg {
		os.Exit(Main(os.Args[2:]))
	}
	if n := os.Getenv("MVM_TEST_FAKE_VMM_FDS"); n != "" {
		os.Exit(fakeListeningVMM(n))
	}
	os.Exit(m.Run())
}

func TestParseStartTime(t *testing.T) {
	line := "1234 (qemu (evil) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 3 0 987654 1000 100 18446744073709551615"
	got, err := parseStartTime([]byte(line))
	if err != nil || got != 987654 {
		t.Fatalf("got %d, %v", got, err)
	}
	for _, bad := range []string{"", "1 (x S 1", "1 (x) S 1 2 3"} {
		if _, err := parseStartTime([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	self, err := ReadProc(os.Getpid())
	if err != nil || !self.Alive() {
		t.Fatalf("self %+v alive=%v err=%v", self, self.Alive(), err)
	}
	if (Proc{Pid: self.Pid, Start: self.Start + 1}).Alive() {
		t.Fatal("a different start time must not count as the same process")
	}
}

// fakeGuest stands in for QEMU's chardev socket plus the guest agent: it
// accepts one chardev connection at a time and serves a yamux session that
// echoes each stream with a prefix naming the boot it belongs to.
type fakeGuest struct {
	ln    net.Listener
	conns chan net.Conn
	got   chan string // what each stream carried, when someone listens
}

func newFakeGuest(t *testing.T, path string) *fakeGuest {
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGuest{ln: ln, conns: make(chan net.Conn, 4), got: make(chan string, 16)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for boot := 1; ; boot++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			g.conns <- c
			sess, err := serialmux.Server(c)
			if err != nil {
				return
			}
			prefix := []byte{byte('0' + boot)}
			go func() {
				for {
					st, err := sess.Accept()
					if err != nil {
						return
					}
					go func() {
						defer st.Close()
						b, _ := io.ReadAll(st)
						select {
						case g.got <- string(b):
						default:
						}
						st.Write(append(prefix, b...))
					}()
				}
			}()
		}
	}()
	return g
}

func roundTrip(t *testing.T, sock, msg string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	c.(*net.UnixConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRelayEchoAndReconnect(t *testing.T) {
	dir := t.TempDir()
	serial := filepath.Join(dir, "serial-agent.sock")
	agent := filepath.Join(dir, AgentSock)
	g := newFakeGuest(t, serial)
	r := &relay{serial: serial, agent: agent, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := r.listen(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(agent); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent socket mode: %v %v", fi, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.run(ctx)

	// Concurrent connections each get their own stream.
	errs := make(chan error, 3)
	for i := range 3 {
		go func() {
			msg := strings.Repeat(string(rune('a'+i)), 100000)
			if got := roundTrip(t, agent, msg); got != "1"+msg {
				errs <- errors.New("bad echo")
				return
			}
			errs <- nil
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// The guest "reboots": its end of the chardev drops. The relay must
	// reconnect and serve new connections over a new session.
	r.mu.Lock()
	old := r.sess
	r.mu.Unlock()
	(<-g.conns).Close()
	// A connection racing the reboot may be dropped (as a real one would be);
	// wait until the relay has a new session.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		cur := r.sess
		r.mu.Unlock()
		if cur != nil && cur != old {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("relay did not reconnect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := roundTrip(t, agent, "hi"); got != "2hi" {
		t.Fatalf("after reconnect got %q", got)
	}
}

// With AgentReady the relay announces a connection only once it is joined
// to the guest, and a host that gave up before then sends the guest
// nothing: a handshake it had queued would cost the guest (slow under TCG)
// a handshake for nobody.
func TestRelayReady(t *testing.T) {
	dir := t.TempDir()
	serial := filepath.Join(dir, "serial-agent.sock")
	agent := filepath.Join(dir, AgentSock)
	r := &relay{serial: serial, agent: agent, log: slog.New(slog.NewTextHandler(io.Discard, nil)), ready: true}
	if err := r.listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.run(ctx)

	// A host that writes its hello and gives up while the guest boots.
	stale, err := net.Dial("unix", agent)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stale.Write([]byte("stale hello")); err != nil {
		t.Fatal(err)
	}
	// One that waits.
	c, err := net.Dial("unix", agent)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	readyErr := make(chan error, 1)
	go func() {
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		defer acancel()
		readyErr <- AwaitReady(actx, c)
	}()
	select {
	case err := <-readyErr:
		t.Fatalf("ready before the guest exists: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	stale.Close()
	time.Sleep(50 * time.Millisecond) // let the relay see nothing yet: no session

	g := newFakeGuest(t, serial)
	if err := <-readyErr; err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("live")); err != nil {
		t.Fatal(err)
	}
	c.(*net.UnixConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "1live" {
		t.Fatalf("echo %q, %v", b, err)
	}
	// Every stream the guest saw: the live one, maybe an empty one for the
	// stale connection, never its hello.
	timeout := time.After(500 * time.Millisecond)
	for {
		select {
		case s := <-g.got:
			if strings.Contains(s, "stale") {
				t.Fatalf("the guest got a stale connection's bytes: %q", s)
			}
			continue
		case <-timeout:
		}
		break
	}

	// A context that ends first ends the wait with its cause.
	cancelled, cancel2 := context.WithCancel(ctx)
	cancel2()
	a, b2 := net.Pipe()
	defer a.Close()
	defer b2.Close()
	if err := AwaitReady(cancelled, a); err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	// A peer that sends something else is refused.
	a2, b3 := net.Pipe()
	defer a2.Close()
	defer b3.Close()
	go b3.Write([]byte{'x'})
	if err := AwaitReady(ctx, a2); err == nil || !strings.Contains(err.Error(), "want") {
		t.Fatalf("wrong byte: %v", err)
	}
}

func waitFile(t *testing.T, path string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within %v", path, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fakeListeningVMM serves each inherited listening descriptor (3, 4, …)
// by writing its number to every connection, as QEMU serves chardevs.
func fakeListeningVMM(count string) int {
	n, _ := strconv.Atoi(count)
	for fd := FirstListenFD; fd < FirstListenFD+n; fd++ {
		ln, err := net.FileListener(os.NewFile(uintptr(fd), "listen"))
		if err != nil {
			return 1
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%d\n", fd)
				c.Close()
			}
		}()
	}
	time.Sleep(time.Minute)
	return 0
}

// The supervisor binds Config.Listen and hands the sockets to the VMM in
// order; connections made before the VMM accepts are not lost.
func TestLaunchPassesListeningSockets(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MVM_TEST_FAKE_VMM_FDS", "2")
	if _, err := Launch(context.Background(), dir, Config{
		Argv: []string{self}, VMMLog: filepath.Join(dir, "vmm.log"), Listen: []string{a, b},
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p, err := ReadPids(dir); err == nil {
			p.Supervisor.Signal(syscall.SIGTERM)
			waitFile(t, filepath.Join(dir, ExitFile), 20*time.Second)
		}
	})
	for want, path := range map[int]string{3: a, 4: b} {
		deadline := time.Now().Add(10 * time.Second)
		var got string
		for {
			c, err := net.Dial("unix", path)
			if err == nil {
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				line, _ := io.ReadAll(c)
				c.Close()
				got = strings.TrimSpace(string(line))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("dial %s: %v", path, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if got != strconv.Itoa(want) {
			t.Errorf("%s answered by fd %q, want %d", path, got, want)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", path, fi.Mode().Perm(), err)
		}
	}
}

func TestLaunchRecordsExit(t *testing.T) {
	dir := t.TempDir()
	mem := filepath.Join(dir, "mem")
	pid, err := Launch(context.Background(), dir, Config{
		Argv:   []string{"/bin/sh", "-c", "echo booting; : > " + mem + "; exit 3"},
		VMMLog: filepath.Join(dir, "qemu.log"),
		Remove: []string{mem},
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, ExitFile), 10*time.Second)
	ex, err := ReadExit(dir)
	if err != nil || ex.Code != 3 {
		t.Fatalf("exit = %+v, %v", ex, err)
	}
	pids, err := ReadPids(dir)
	if err != nil || pids.Supervisor.Pid != pid || pids.VMM.Pid == 0 {
		t.Fatalf("pids = %+v, %v (launched %d)", pids, err, pid)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "qemu.log")); !bytes.Contains(b, []byte("booting")) {
		t.Fatalf("vmm log = %q", b)
	}
	// The VMM's private files go once it has exited, before the exit is recorded.
	if _, err := os.Stat(mem); !os.IsNotExist(err) {
		t.Fatalf("VMM file left behind: %v", err)
	}
}

func TestLaunchSIGTERMStopsVMM(t *testing.T) {
	dir := t.TempDir()
	pid, err := Launch(context.Background(), dir, Config{
		Argv:      []string{"/bin/sleep", "60"},
		VMMLog:    filepath.Join(dir, "qemu.log"),
		QMPSocket: filepath.Join(dir, "no-qmp.sock"), // unreachable: escalate to signals
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var pids Pids
	for pids.VMM.Pid == 0 {
		if time.Now().After(deadline) {
			t.Fatal("vmm pid never recorded")
		}
		time.Sleep(20 * time.Millisecond)
		pids, _ = ReadPids(dir)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, ExitFile), 15*time.Second)
	ex, _ := ReadExit(dir)
	if ex.Signal == "" {
		t.Fatalf("exit = %+v, want a signal", ex)
	}
	if pids.VMM.Alive() {
		t.Fatal("vmm still alive")
	}
}

// A VMM that cannot start is recorded as such, and the sockets bound for it
// are gone.
func TestLaunchVMMThatCannotStart(t *testing.T) {
	dir := t.TempDir()
	socks := []string{filepath.Join(dir, "console.sock"), filepath.Join(dir, "serial.sock")}
	if _, err := Launch(context.Background(), dir, Config{
		Argv:       []string{filepath.Join(dir, "no-such-vmm")},
		VMMLog:     filepath.Join(dir, "vmm.log"),
		Listen:     socks,
		SerialSock: socks[1],
		AgentSock:  filepath.Join(dir, AgentSock),
	}); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, ExitFile), 10*time.Second)
	ex, err := ReadExit(dir)
	if err != nil || ex.Code != -1 || !strings.Contains(ex.Error, "no-such-vmm") {
		t.Fatalf("exit = %+v, %v", ex, err)
	}
	for _, p := range append(socks, filepath.Join(dir, AgentSock)) {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
}
