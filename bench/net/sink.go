package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/vishvananda/netns"
)

// Ports of the sink, on every address it listens on. The namespaces are
// the bench's own, so fixed ports cannot collide with anything.
const (
	streamPort  = 5201 // dd | nc: bytes counted and timed
	connectPort = 5202 // probe connects: accepted and closed
	gatePort    = 5203 // the raw guest waits here for its next step
)

// stream is one finished dd|nc connection as the sink saw it.
type stream struct {
	Bytes int64         // total received
	Timed int64         // bytes received after the first read (what Span covers)
	Span  time.Duration // first read to last read
	Err   error
}

// MBps is the throughput over the timed part, in MB/s (10^6 bytes).
func (s stream) MBps() float64 {
	if s.Span <= 0 {
		return 0
	}
	return float64(s.Timed) / s.Span.Seconds() / 1e6
}

// sink listens for the guests' traffic: the stream port counts and times
// bytes, the connect port accepts and closes. Every finished stream is
// sent on Streams.
type sink struct {
	Streams chan stream
	Gates   chan net.Conn // raw guests waiting at the gate
	want    int64         // a stream is complete at this many bytes
	mu      sync.Mutex
	ls      []net.Listener
	accepts int
}

func newSink(want int64) *sink {
	return &sink{Streams: make(chan stream, 64), Gates: make(chan net.Conn, 8), want: want}
}

// listen opens ports (default: all three) on ip inside namespace ns (the
// calling process's own when ns is nil).
func (s *sink) listen(ns *netns.NsHandle, ip string, ports ...int) error {
	if len(ports) == 0 {
		ports = []int{streamPort, connectPort, gatePort}
	}
	var ls []net.Listener
	err := inNS(ns, func() error {
		for _, p := range ports {
			l, err := net.Listen("tcp4", net.JoinHostPort(ip, fmt.Sprint(p)))
			if err != nil {
				for _, o := range ls {
					o.Close()
				}
				return err
			}
			ls = append(ls, l)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sink on %s: %w", ip, err)
	}
	s.mu.Lock()
	s.ls = append(s.ls, ls...)
	s.mu.Unlock()
	for i, l := range ls {
		switch ports[i] {
		case streamPort:
			go s.serve(l, s.handleStream)
		case connectPort:
			go s.serve(l, s.handleConnect)
		case gatePort:
			go s.serve(l, func(c net.Conn) { s.Gates <- c })
		default:
			go s.serve(l, s.handleConnect)
		}
	}
	return nil
}

func (s *sink) serve(l net.Listener, h func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go h(c)
	}
}

func (s *sink) handleConnect(c net.Conn) {
	s.mu.Lock()
	s.accepts++
	s.mu.Unlock()
	c.Close()
}

// handleStream reads until the expected size (or EOF) and times the bytes
// from the first read to the last.
func (s *sink) handleStream(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 256<<10)
	var st stream
	var first, last time.Time
	for st.Bytes < s.want {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute))
		n, err := c.Read(buf)
		if n > 0 {
			now := time.Now()
			if first.IsZero() {
				first = now
			} else {
				st.Timed += int64(n)
			}
			last = now
			st.Bytes += int64(n)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				st.Err = err
			}
			break
		}
	}
	st.Span = last.Sub(first)
	if st.Err == nil && st.Bytes < s.want {
		st.Err = fmt.Errorf("stream ended after %d of %d bytes", st.Bytes, s.want)
	}
	s.Streams <- st
}

// next waits for the next finished stream; it gives up when ctx ends or
// abort (a guest that died) delivers.
func (s *sink) next(ctx context.Context, abort <-chan struct{}, timeout time.Duration) (stream, error) {
	select {
	case st := <-s.Streams:
		return st, st.Err
	case <-ctx.Done():
		return stream{}, ctx.Err()
	case <-abort:
		return stream{}, errors.New("the guest is gone before its stream ended")
	case <-time.After(timeout):
		return stream{}, fmt.Errorf("no stream reached the sink within %s", timeout)
	}
}

// drain discards finished streams and waiting gates left over from a
// failed step.
func (s *sink) drain() {
	for {
		select {
		case <-s.Streams:
		case c := <-s.Gates:
			c.Close()
		default:
			return
		}
	}
}

func (s *sink) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.ls {
		l.Close()
	}
	s.ls = nil
}
