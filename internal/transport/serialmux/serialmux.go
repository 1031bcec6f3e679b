// Package serialmux turns one byte pipe (a virtio-serial port) into many
// independent streams using yamux. The guest agent is the yamux server and
// accepts one stream per operation; the host side (the per-VM supervisor) is
// the client and opens one stream per host connection. yamux gives each
// stream its own flow-control window, so a slow reader on one stream cannot
// stall another.
package serialmux

import (
	"io"
	"time"

	"github.com/hashicorp/yamux"
)

// config is shared by both ends: keepalives detect a dead peer (the supervisor
// was killed, or the guest hung) within KeepAliveInterval+ConnectionWriteTimeout.
func config() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 5 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.StreamOpenTimeout = 10 * time.Second
	c.StreamCloseTimeout = 30 * time.Second
	c.MaxStreamWindowSize = 1 << 20
	c.LogOutput = io.Discard
	return c
}

// Server runs the guest end over rwc.
func Server(rwc io.ReadWriteCloser) (*yamux.Session, error) {
	return yamux.Server(rwc, config())
}

// Client runs the host end over rwc.
func Client(rwc io.ReadWriteCloser) (*yamux.Session, error) {
	return yamux.Client(rwc, config())
}
