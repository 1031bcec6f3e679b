package guestinit

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/transport/serialmux"
)

// A yamux session closing its detachable port only interrupts the read it
// had pending; the port then syncs again on the same descriptor and reads
// the bytes that were queued behind the ones that ended the session.
func TestDetachablePortSurvivesSessionClose(t *testing.T) {
	r, w, err := os.Pipe() // pollable, like a virtio port
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	port := &detachable{File: r}
	read := make(chan error, 1)
	go func() {
		_, err := port.Read(make([]byte, 1))
		read <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the read block
	if err := port.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-read:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("pending read ended with %v, want a deadline error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not interrupt the pending read")
	}
	if !port.reattach() {
		t.Fatal("reattach failed: the port was closed")
	}
	if _, err := io.WriteString(w, "garbage\nMVM-SYNC 0123456789abcdef\n"); err != nil {
		t.Fatal(err)
	}
	acks := &ackWriter{acked: make(chan struct{})}
	synced := make(chan error, 1)
	go func() {
		// The guest end of the handshake answers the queued SYNC.
		synced <- serialmux.GuestSync(struct {
			io.Reader
			io.Writer
		}{port, acks})
	}()
	select {
	case <-acks.acked:
	case <-time.After(5 * time.Second):
		t.Fatal("no ACK for the SYNC queued on the reattached port")
	}
	if _, err := io.WriteString(w, "MVM-GO 0123456789abcdef\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-synced:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("sync did not finish after GO")
	}
}

// ackWriter closes acked when the guest writes its ACK.
type ackWriter struct {
	acked chan struct{}
	once  sync.Once
}

func (a *ackWriter) Write(p []byte) (int, error) {
	if strings.HasPrefix(string(p), "MVM-ACK 0123456789abcdef") {
		a.once.Do(func() { close(a.acked) })
	}
	return len(p), nil
}

// A port that takes no deadlines (a regular file here) is really closed.
func TestDetachableClosesWhatTakesNoDeadline(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "port"))
	if err != nil {
		t.Fatal(err)
	}
	port := &detachable{File: f}
	if err := port.Close(); err != nil {
		t.Fatal(err)
	}
	if port.reattach() {
		t.Fatal("reattach succeeded on a closed file")
	}
	if _, err := f.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("write after Close: %v, want ErrClosed", err)
	}
}
