// Package guestcfg is the contract between the host and the guest agent that
// travels on the read-only config drive: what the VM is called, how the agent
// is reached, and the policy it enforces. The host writes it; the agent reads
// it at boot and treats it as untrusted input (strict decode, size limit).
package guestcfg

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
)

// Filesystem labels the agent looks for; drives are found by label, never by
// device order.
const (
	RootLabel   = "mvm-root"
	ConfigLabel = "mvm-config"
)

// FileName is the config's path inside the config drive.
const FileName = "mvm.json"

// SerialPortName is the virtio-serial port name the agent listens on when the
// transport is virtio-serial.
const SerialPortName = "org.mvm.agent.0"

// DefaultVsockPort is the agent's AF_VSOCK port (unprivileged range).
const DefaultVsockPort = 5252

// Transport kinds.
const (
	TransportSerial = "virtio-serial"
	TransportVsock  = "vsock"
	TransportUnix   = "unix" // containers: a socket in a bind-mounted dir
)

// MaxSize bounds the config file the agent will read.
const MaxSize = 1 << 20

// Config is the guest's view of its VM.
type Config struct {
	Version   int       `json:"version"`
	Name      string    `json:"name"`
	Hostname  string    `json:"hostname"`
	Transport Transport `json:"transport"`
	Policy    Policy    `json:"policy"`
	Env       []string  `json:"env,omitempty"` // KEY=VALUE for every process the agent starts
	// HostTimeUnixNano lets the guest set a sane clock before it can ask the host.
	HostTimeUnixNano int64 `json:"host_time_unix_nano,omitempty"`
	// HostPublicKey is the only host key the agent accepts
	// (auth.MarshalPublicKey text). Required: the agent serves nobody
	// without it.
	HostPublicKey string `json:"host_public_key,omitempty"`
	// GuestPrivateKey is this VM's own identity (auth.MarshalPrivateKey
	// text); the host pins its public half. A secret: the drive is 0600 on
	// the host and the agent unmounts it after reading.
	GuestPrivateKey string `json:"guest_private_key,omitempty"`
	// Network is the guest's NIC configuration; nil for a VM without one.
	Network *Network `json:"network,omitempty"`
}

// HasKeys reports whether the config carries both authentication keys.
func (c *Config) HasKeys() bool { return c.HostPublicKey != "" && c.GuestPrivateKey != "" }

// Transport says how the agent is reached.
type Transport struct {
	Kind       string `json:"kind"`
	VsockPort  uint32 `json:"vsock_port,omitempty"`
	SerialName string `json:"serial_name,omitempty"`
	UnixPath   string `json:"unix_path,omitempty"`
}

// Policy is what the agent allows.
type Policy struct {
	Console bool `json:"console"`
}

var hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Validate checks a decoded config.
func (c *Config) Validate() error {
	if c.Version != 1 {
		return fmt.Errorf("unsupported config version %d", c.Version)
	}
	if !hostnameRE.MatchString(c.Hostname) {
		return fmt.Errorf("invalid hostname %q", c.Hostname)
	}
	switch c.Transport.Kind {
	case TransportSerial, TransportVsock, TransportUnix:
	default:
		return fmt.Errorf("unknown transport %q", c.Transport.Kind)
	}
	return c.Network.Validate()
}

// Encode renders c as indented JSON.
func (c *Config) Encode() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return json.MarshalIndent(c, "", "  ")
}

// Decode parses and validates a config, refusing unknown fields and oversize input.
func Decode(r io.Reader) (*Config, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSize {
		return nil, errors.New("config larger than 1 MiB")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("decode guest config: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode guest config: trailing data")
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("guest config: %w", err)
	}
	return &c, nil
}
