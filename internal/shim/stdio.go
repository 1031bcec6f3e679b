//go:build linux

package shim

import (
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
)

// openOutput opens a containerd stdout/stderr FIFO for writing. O_RDWR
// does not wait for a reader (containerd's is already open, but one that
// went away must not hang the shim); closing it is the reader's EOF.
func openOutput(path string) (io.WriteCloser, error) {
	if path == "" {
		return nopWriteCloser{io.Discard}, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open stdio fifo: %w", err)
	}
	return f, nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

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
