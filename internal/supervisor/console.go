package supervisor

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Console copying: a reader drains QEMU's console socket into a bounded
// pending buffer and a writer appends what is pending to the log. QEMU sends
// the UART's bytes a few at a time, so the reader coalesces them; when the
// writer falls behind (slow or full disk) and the buffer is full, the reader
// drops output instead of waiting, so the guest's UART is never held up by
// the host's disk and memory stays bounded.
const (
	consoleChunk   = 4 << 10  // one socket read
	consolePending = 64 << 10 // output waiting for the disk, at most
	// consoleBatch is the pause after a short read. QEMU writes each UART
	// byte on its own, and each is an skb of its own in the socket: about
	// 270 fill QEMU's send quota, after which the guest's UART (and the
	// kernel printing to it) waits for us. 5 ms capped a boot's console at
	// ~54 KB/s, ~0.3 s of an 18 KB cold boot log under TCG; 1 ms is ~270
	// KB/s for at most 1000 reads a second while output flows.
	consoleBatch = time.Millisecond
	// consoleDrain is how long output still in the socket may take to reach
	// the log once the VMM has exited (its last words: a panic, say).
	consoleDrain = 2 * time.Second
)

type console struct {
	sock    string
	out     io.WriteCloser
	log     *slog.Logger
	dropped atomic.Int64

	mu      sync.Mutex
	pending []byte
	ready   chan struct{} // signalled when pending grows
}

// run copies the console until the VMM is gone. vmmGone is cancelled when
// the VMM exits: no new connection is tried after that, and the current one
// is read to its end. hard ends everything at once. run closes out.
func (c *console) run(vmmGone, hard context.Context) {
	c.pending = make([]byte, 0, consolePending)
	c.ready = make(chan struct{}, 1)
	readDone := make(chan struct{})
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		c.write(readDone)
	}()
	c.read(vmmGone, hard)
	close(readDone)
	<-wrote
	c.out.Close()
	if n := c.dropped.Load(); n > 0 {
		c.log.Warn("console output dropped", "bytes", n)
	}
}

// queue adds b to the pending output, dropping what does not fit.
func (c *console) queue(b []byte) {
	c.mu.Lock()
	take := min(len(b), cap(c.pending)-len(c.pending))
	c.pending = append(c.pending, b[:take]...)
	c.mu.Unlock()
	if take < len(b) {
		c.dropped.Add(int64(len(b) - take))
	}
	select {
	case c.ready <- struct{}{}:
	default:
	}
}

// write appends pending output to the log until readDone, then the rest.
// It swaps buffers so the reader never waits for the disk.
func (c *console) write(readDone <-chan struct{}) {
	spare := make([]byte, 0, consolePending)
	failing := false
	for {
		last := false
		select {
		case <-c.ready:
		case <-readDone:
			last = true
		}
		c.mu.Lock()
		b := c.pending
		c.pending = spare[:0]
		c.mu.Unlock()
		if len(b) > 0 {
			n, err := c.out.Write(b)
			if err != nil {
				c.dropped.Add(int64(len(b) - n))
				if !failing { // once per run of failures, not per chunk
					c.log.Warn("console log write failed; dropping output", "err", err)
				}
			}
			failing = err != nil
		}
		spare = b
		if last {
			return
		}
	}
}

func (c *console) read(vmmGone, hard context.Context) {
	buf := make([]byte, consoleChunk)
	backoff := 2 * time.Millisecond
	for vmmGone.Err() == nil {
		// Not bounded by vmmGone: a connection made as the VMM exits still
		// holds its last output.
		fd, err := dialBlocking(c.sock)
		if err != nil {
			// QEMU creates the socket early and, with wait=on, waits for
			// us before it runs the guest: dial often.
			sleep(vmmGone, backoff)
			backoff = min(backoff*2, 50*time.Millisecond)
			continue
		}
		backoff = 2 * time.Millisecond
		// Shutdown, unlike close, wakes a read blocked on the socket.
		stop := context.AfterFunc(hard, func() { syscall.Shutdown(fd, syscall.SHUT_RDWR) })
		for {
			n, err := syscall.Read(fd, buf)
			if err == syscall.EINTR {
				continue
			}
			if n > 0 {
				c.queue(buf[:n])
			}
			if err != nil || n <= 0 {
				break
			}
			if n < len(buf)/2 {
				// QEMU sends each byte the UART transmits on its own;
				// waiting a moment lets a burst gather instead of costing
				// a read and a wake-up per byte. Only a moment: each byte
				// is a socket buffer of its own, so a few hundred fill
				// QEMU's send quota and hold up the guest's UART.
				sleep(hard, consoleBatch)
			}
		}
		stop()
		syscall.Close(fd)
	}
}

// dialBlocking connects a blocking unix socket. The console is read with
// plain blocking reads on a thread of its own rather than through Go's
// poller: the edge-triggered poller would wake the process for every byte
// QEMU sends, even while the reader waits to batch them.
func dialBlocking(path string) (int, error) {
	fd, err := socketCloexec(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		return -1, err
	}
	// Bounds connect when the listener's backlog is full.
	tv := syscall.Timeval{Sec: 2}
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_SNDTIMEO, &tv); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	for {
		err = syscall.Connect(fd, &syscall.SockaddrUnix{Name: path})
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}
