package serialmux

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// pipePair returns two connected stream sockets standing in for the
// supervisor's chardev connection and the guest's port device.
func pipePair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); ch <- c }()
	a, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestSyncSkipsStaleBytesAndStreams(t *testing.T) {
	host, guest := pipePair(t)
	// Stale bytes of an earlier session sit in front of the handshake on
	// both sides: the guest must skip the host's, the host the guest's.
	if _, err := guest.Write([]byte("\x00\x01garbage from an old session\n" + string(bytes.Repeat([]byte("x"), 300)) + "\nMVM-ACK 0123456789abcdef\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := host.Write([]byte("old host bytes\nMVM-SYNC nothex!!nothex!\nMVM-GO 0123456789abcdef\n")); err != nil {
		t.Fatal(err)
	}
	srvCh := make(chan error, 1)
	go func() {
		sess, err := Server(guest)
		if err != nil {
			srvCh <- err
			return
		}
		c, err := sess.Accept()
		if err != nil {
			srvCh <- err
			return
		}
		_, err = io.Copy(c, c)
		srvCh <- err
	}()
	sess, err := Client(host)
	if err != nil {
		t.Fatal(err)
	}
	c, err := sess.Open()
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := bytes.Repeat([]byte("hello "), 10000)
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("echo mismatch")
	}
}

func TestReadLineDiscardsOverlong(t *testing.T) {
	in := bytes.NewBufferString(string(bytes.Repeat([]byte("a"), 200)) + "\nshort\n")
	l, err := readLine(in)
	if err != nil || l != "short" {
		t.Fatalf("got %q, %v", l, err)
	}
	if _, err := readLine(in); err != io.EOF {
		t.Fatalf("want EOF, got %v", err)
	}
}

// TestResyncAfterGuestRestart: a guest that lost its session (restore,
// agent restart) while the host still waits answers one of the repeated SYNCs.
func TestSyncWhenGuestArrivesLate(t *testing.T) {
	host, guest := pipePair(t)
	done := make(chan error, 1)
	go func() { done <- HostSync(host) }()
	// Several SYNCs pile up before the guest reads any.
	time.Sleep(3 * syncResend)
	if err := GuestSync(guest); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("host never completed the handshake")
	}
	// Nothing of the handshake is left in either direction.
	guest.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _ := guest.Read(make([]byte, 1)); n != 0 {
		t.Fatal("guest side has leftover handshake bytes")
	}
}

// TestResyncIsQuickAfterRestore plays a restored guest: its old session eats
// whatever SYNCs arrive first, then it starts listening afresh. The host's
// quick resends must answer it long before the steady resend interval.
func TestResyncIsQuickAfterRestore(t *testing.T) {
	host, guest := pipePair(t)
	done := make(chan error, 1)
	go func() { done <- HostSync(host) }()
	const drain = 60 * time.Millisecond
	guest.SetReadDeadline(time.Now().Add(drain))
	ate, _ := io.Copy(io.Discard, guest)
	guest.SetReadDeadline(time.Time{})
	if ate == 0 {
		t.Fatal("the host sent no SYNC while the old session listened")
	}
	began := time.Now()
	if err := GuestSync(guest); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > syncResend/2 {
		t.Fatalf("fresh guest waited %v for a SYNC; quick resends should answer within %v", took, fastResend)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("host never completed the handshake")
	}
}

func TestResendAfter(t *testing.T) {
	tests := []struct {
		elapsed time.Duration
		want    time.Duration
	}{
		{0, fastResend},
		{fastWindow - time.Millisecond, fastResend},
		{fastWindow, syncResend},
		{time.Minute, syncResend},
	}
	for _, tt := range tests {
		if got := resendAfter(tt.elapsed); got != tt.want {
			t.Errorf("resendAfter(%v) = %v, want %v", tt.elapsed, got, tt.want)
		}
	}
}

func FuzzGuestSync(f *testing.F) {
	f.Add([]byte("MVM-SYNC 0123456789abcdef\n"))
	f.Add([]byte("junk\nMVM-SYNC 0123\nMVM-SYNC 0123456789abcdef\n"))
	f.Add([]byte{0, 1, 2, '\n'})
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(data), &out}
		err := GuestSync(rw)
		if err == nil && !bytes.HasPrefix(out.Bytes(), []byte(ackPrefix)) {
			t.Fatalf("synced without ack: %q", out.Bytes())
		}
	})
}
