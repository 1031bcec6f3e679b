//go:build linux

package shim

import (
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// outputOpenTimeout bounds the wait for containerd's reader of a stdout
// or stderr FIFO.
var outputOpenTimeout = 10 * time.Second

// openOutput opens a containerd stdout/stderr FIFO for writing. Like
// containerd's runc shim it opens the write end blocking, i.e. once the
// reader has opened its end: a writer that came and went before the
// reader's open (containerd opens in a goroutine of its own) would lose
// what it wrote. The open runs in the background from here; the first
// Write and Close wait for it, at most outputOpenTimeout, after which
// output is discarded.
func openOutput(path string) io.WriteCloser {
	if path == "" {
		return nopWriteCloser{io.Discard}
	}
	w := &fifoWriter{path: path, opened: make(chan struct{})}
	go func() {
		w.f, w.err = os.OpenFile(path, os.O_WRONLY, 0)
		close(w.opened)
	}()
	return w
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

type fifoWriter struct {
	path   string
	opened chan struct{} // closed when the open returned
	f      *os.File
	err    error
	once   sync.Once
	mu     sync.Mutex // Write against Close
	closed bool
}

// ready waits for the open (once), giving up after outputOpenTimeout.
func (w *fifoWriter) ready() error {
	w.once.Do(func() {
		select {
		case <-w.opened:
		case <-time.After(outputOpenTimeout):
			// Release the pending open by being its reader for a moment.
			if r, err := os.OpenFile(w.path, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
				<-w.opened
				r.Close()
			} else {
				<-w.opened
			}
			if w.f != nil {
				w.f.Close()
				w.f = nil
			}
			w.err = fmt.Errorf("no reader on %s after %s", w.path, outputOpenTimeout)
		}
	})
	return w.err
}

// Write discards output it cannot deliver: the process must not fail
// because nobody reads it.
func (w *fifoWriter) Write(p []byte) (int, error) {
	if w.ready() != nil {
		return len(p), nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, os.ErrClosed
	}
	if _, err := w.f.Write(p); err != nil {
		return 0, fmt.Errorf("write %s: %w", w.path, err)
	}
	return len(p), nil
}

func (w *fifoWriter) Close() error {
	if w.ready() != nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	return w.f.Close()
}

// stdinFIFO reads containerd's stdin FIFO. Opening a FIFO for reading
// blocks until a writer comes, so it is opened on the first Read (the
// exec's stdin pump, not the shim's Start); close unblocks a Read or an
// open still waiting.
type stdinFIFO struct {
	path   string
	once   sync.Once
	mu     sync.Mutex
	f      *os.File
	err    error
	closed bool
}

func (s *stdinFIFO) Read(p []byte) (int, error) {
	s.once.Do(func() {
		f, err := os.OpenFile(s.path, os.O_RDONLY, 0)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.f, s.err = f, err
		if err == nil && s.closed {
			f.Close()
			s.err = os.ErrClosed
		}
	})
	s.mu.Lock()
	f, err := s.f, s.err
	s.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return f.Read(p)
}

// Close ends stdin: a waiting open is released by opening the FIFO's
// write end once (without blocking), a pending Read by closing the file.
func (s *stdinFIFO) Close() error {
	s.mu.Lock()
	s.closed = true
	f := s.f
	s.mu.Unlock()
	if f != nil {
		return f.Close()
	}
	if w, err := os.OpenFile(s.path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
		w.Close()
	}
	return nil
}
