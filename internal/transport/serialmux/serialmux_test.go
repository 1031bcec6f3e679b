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
	// Stale bytes of an earlier session sit in front of the SYNC on the guest
	// side, and stale guest bytes in front of the ACK on the host side.
	go func() {
		guest.Write([]byte("\x00\x01garbage from an old session\n" + string(bytes.Repeat([]byte("x"), 300)) + "\n"))
	}()
	srvCh := make(chan error, 1)
	go func() {
		// Guest reads its own stale input first: simulate by writing junk the
		// host will read before the ACK.
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
	// Host-side junk the guest must skip.
	sess, err := func() (s interface {
		Open() (net.Conn, error)
	}, err error) {
		host.Write([]byte("old host bytes\nMVM-SYNC nothex!!nothex!\n"))
		return Client(host)
	}()
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
