// Package mvm boots microVMs and drives them from Go: up, exec (streams,
// exit status, signals), copy, port forwarding, snapshots and removal.
//
// A Client works on the same state as the mvmctl command line (the same
// directories, records and images), and each method is the very call the
// matching mvmctl command makes, so a VM made here shows in `mvmctl ls` and
// one made there can be driven from here. Backends start helper processes
// (a supervisor per VM, a DNS server per network), so the mvm binaries must
// be installed: Options.BinDir, or the directory of mvmctl on PATH.
package mvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/config"
	"github.com/mvm-dev/mvm/internal/paths"
	"github.com/mvm-dev/mvm/internal/store"
	"github.com/mvm-dev/mvm/internal/vm"
)

// Options say where a Client's state lives and where the mvm binaries are.
// The zero value means what mvmctl does: MVM_*_DIR, then the XDG
// directories, and mvmctl from PATH.
type Options struct {
	StateDir, ConfigDir, CacheDir, ShareDir string
	// BinDir holds mvmctl, mvm-agent and mvm-supervisor.
	BinDir string
	// Logger gets the backends' debug output (nothing if nil).
	Logger *slog.Logger
}

// Client drives the VMs of one mvm state.
type Client struct {
	m *vm.Manager
}

// New opens the state o names. It also points this process's
// MVM_AGENT_BIN and MVM_SUPERVISOR_BIN at BinDir unless they are set,
// since the backends find those binaries through them.
func New(o Options) (*Client, error) {
	dirs, err := paths.Resolve()
	if err != nil {
		return nil, err
	}
	for _, d := range []struct {
		dst *string
		v   string
	}{
		{&dirs.State, o.StateDir}, {&dirs.Config, o.ConfigDir}, {&dirs.Cache, o.CacheDir}, {&dirs.Share, o.ShareDir},
	} {
		if d.v == "" {
			continue
		}
		if !filepath.IsAbs(d.v) {
			return nil, fmt.Errorf("mvm: directory %q must be absolute", d.v)
		}
		*d.dst = filepath.Clean(d.v)
	}
	bin, err := binDir(o.BinDir)
	if err != nil {
		return nil, err
	}
	for env, name := range map[string]string{"MVM_AGENT_BIN": "mvm-agent", "MVM_SUPERVISOR_BIN": "mvm-supervisor"} {
		if os.Getenv(env) == "" {
			if err := os.Setenv(env, filepath.Join(bin, name)); err != nil {
				return nil, err
			}
		}
	}
	cfg, err := config.Load(dirs.ConfigFile())
	if err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := vm.New(dirs, cfg, log)
	m.Mvmctl = filepath.Join(bin, "mvmctl")
	return &Client{m: m}, nil
}

func binDir(dir string) (string, error) {
	if dir == "" {
		p, err := exec.LookPath("mvmctl")
		if err != nil {
			return "", errors.New("mvm: mvmctl is not on PATH: install mvm ('make build' puts it in bin/) or set Options.BinDir")
		}
		if p, err = filepath.Abs(p); err != nil {
			return "", err
		}
		dir = filepath.Dir(p)
	}
	for _, b := range []string{"mvmctl", "mvm-agent", "mvm-supervisor"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("mvm: %s missing from %s: install all three mvm binaries there", b, dir)
		}
	}
	return dir, nil
}

// VM is what a Client reports of a VM.
type VM struct {
	Name      string
	State     string // creating, running, paused, stopping, stopped, failed
	Reason    string // why it stopped or failed
	Backend   string
	Image     string
	CPUs      int
	MemoryMiB int
	Network   string // "" without a NIC
	IP        string // its address on Network, if it has one
	Template  string // the template it was made from
	Snapshot  string // the snapshot it was restored from
	Created   time.Time
	Started   time.Time
}

func fromRecord(r *store.Record) *VM {
	v := &VM{
		Name: r.Name, State: r.State, Reason: r.Reason, Backend: r.Backend, Image: r.Image,
		CPUs: r.CPUs, MemoryMiB: r.MemoryMiB, Template: r.Template, Snapshot: r.Snapshot,
		Created: r.Created, Started: r.Started,
	}
	if r.Net != nil {
		v.Network, v.IP = r.Net.Network, r.Net.IP
	}
	return v
}

// UpOptions describe a new VM, as `mvmctl up` flags do; zero fields take
// the template's, the config file's or the built-in defaults.
type UpOptions struct {
	Name         string // generated if empty
	Image        string // catalog name or recipe path
	Backend      string // qemu, firecracker, docker, …; empty: auto-select
	CPUs         int
	MemoryMiB    int
	Network      string   // network to join; "none": no NIC
	Publish      []string // -p specs: [IP:]HOST:GUEST[/udp]
	Template     string   // boot from (or hand out a pooled clone of) this template
	FromSnapshot string   // restore this snapshot instead of booting
	BootTimeout  time.Duration
	// Disks are raw images attached after the root disk (fresh boots
	// only). The caller keeps them: Remove does not delete them.
	Disks []Disk
}

// Disk is an extra block device for a VM.
type Disk struct {
	ID       string // unique among the VM's disks; not "root" or "config"
	Path     string // absolute path of a raw image
	ReadOnly bool
}

// Up creates a VM and returns once its agent answers.
func (c *Client) Up(ctx context.Context, o UpOptions) (*VM, error) {
	r, err := c.m.Up(ctx, vm.UpOptions{
		Name: o.Name, Image: o.Image, Backend: o.Backend, CPUs: o.CPUs, MemoryMiB: o.MemoryMiB,
		Network: o.Network, Publish: o.Publish, Template: o.Template, FromSnapshot: o.FromSnapshot,
		BootTimeout: o.BootTimeout, Disks: disks(o.Disks),
	})
	if err != nil {
		return nil, err
	}
	return fromRecord(r), nil
}

func disks(ds []Disk) []backend.Disk {
	var out []backend.Disk
	for _, d := range ds {
		out = append(out, backend.Disk{ID: d.ID, Path: d.Path, Format: "raw", ReadOnly: d.ReadOnly})
	}
	return out
}

// Get reports one VM.
func (c *Client) Get(ctx context.Context, name string) (*VM, error) {
	r, err := c.m.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	return fromRecord(r), nil
}

// List reports every VM.
func (c *Client) List(ctx context.Context) ([]*VM, error) {
	rs, err := c.m.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*VM, len(rs))
	for i, r := range rs {
		out[i] = fromRecord(r)
	}
	return out, nil
}

// Stop shuts a VM down through its agent, forcing it after timeout (0:
// the configured stop timeout). Stopping a stopped VM is not an error.
func (c *Client) Stop(ctx context.Context, name string, timeout time.Duration) (*VM, error) {
	r, err := c.m.Down(ctx, name, timeout, false)
	if err != nil {
		return nil, err
	}
	return fromRecord(r), nil
}

// Start boots a stopped VM again, from the same disk.
func (c *Client) Start(ctx context.Context, name string) (*VM, error) {
	r, err := c.m.Start(ctx, name, vm.StartOptions{})
	if err != nil {
		return nil, err
	}
	return fromRecord(r), nil
}

// Remove deletes a VM and everything mvm keeps of it; a running one only
// with force.
func (c *Client) Remove(ctx context.Context, name string, force bool) error {
	return c.m.Remove(ctx, name, force)
}

// Cmd is a command to run in a VM.
type Cmd struct {
	Args []string // program and arguments; looked up on the guest's PATH
	Env  []string // KEY=VALUE added to the agent's environment
	Dir  string   // working directory in the guest
	User string   // name or uid[:gid]; empty: the agent's user
	TTY  bool     // run on a pseudo-terminal (stdout and stderr merge)
	// Stdin, if set, is copied to the command; else it reads /dev/null.
	Stdin          io.Reader
	Stdout, Stderr io.Writer // nil: discarded
	// Timeout kills the command's process group once passed (0: none).
	Timeout time.Duration
	// Rootfs runs the command chrooted into another root: "LABEL=NAME"
	// for an extra Disk holding an ext4 filesystem labelled NAME (mounted
	// by the agent on first use, with /proc, /sys and /dev), or a guest
	// directory. Dir and User are then resolved inside it.
	Rootfs string
}

func (cmd *Cmd) request() (proto.ExecRequest, error) {
	if len(cmd.Args) == 0 {
		return proto.ExecRequest{}, errors.New("mvm: exec: no command")
	}
	return proto.ExecRequest{
		Argv: cmd.Args, Env: cmd.Env, Cwd: cmd.Dir, User: cmd.User, TTY: cmd.TTY,
		TimeoutMS: cmd.Timeout.Milliseconds(), Stdin: cmd.Stdin != nil, Rootfs: cmd.Rootfs,
	}, nil
}

// ExitStatus is how a command ended.
type ExitStatus struct {
	Code     int    // exit status, or 128+n when killed by signal n
	Signal   string // e.g. "TERM" when killed by a signal
	TimedOut bool   // killed because Cmd.Timeout passed
}

// Success says whether the command exited with status 0.
func (e ExitStatus) Success() bool { return e.Code == 0 }

// ExitError is Output's error for a command that ran but failed.
type ExitError struct {
	ExitStatus
	Stderr []byte
}

func (e *ExitError) Error() string {
	if e.Signal != "" {
		return fmt.Sprintf("command killed by SIG%s", e.Signal)
	}
	return fmt.Sprintf("command exited with status %d", e.Code)
}

// Process is a command running in a VM.
type Process struct {
	p *client.Process
}

// Signal delivers sig to the command's process group in the guest.
func (p *Process) Signal(sig syscall.Signal) error { return p.p.Signal(sig) }

// Pid is the command's process id in the guest (it leads its process
// group).
func (p *Process) Pid() int { return p.p.Pid }

// Resize changes the terminal size of a command started with TTY.
func (p *Process) Resize(cols, rows uint16) error { return p.p.Resize(cols, rows) }

// Wait waits for the command to end and its output to be copied.
func (p *Process) Wait() (ExitStatus, error) {
	e, err := p.p.Wait()
	if err != nil {
		return ExitStatus{}, err
	}
	return ExitStatus{Code: e.Code, Signal: e.Signal, TimedOut: e.TimedOut}, nil
}

// StartCmd starts cmd in VM name; ctx bounds the whole command.
func (c *Client) StartCmd(ctx context.Context, name string, cmd Cmd) (*Process, error) {
	req, err := cmd.request()
	if err != nil {
		return nil, err
	}
	ac, err := c.m.Agent(ctx, name, "exec")
	if err != nil {
		return nil, err
	}
	p, err := ac.Start(ctx, req, cmd.Stdin, orDiscard(cmd.Stdout), orDiscard(cmd.Stderr))
	if err != nil {
		return nil, err
	}
	return &Process{p: p}, nil
}

// Run runs cmd in VM name to its end. A command that ran and failed is no
// error: its status says so.
func (c *Client) Run(ctx context.Context, name string, cmd Cmd) (ExitStatus, error) {
	p, err := c.StartCmd(ctx, name, cmd)
	if err != nil {
		return ExitStatus{}, err
	}
	return p.Wait()
}

// Output runs args in VM name and returns its standard output; a non-zero
// exit is an *ExitError holding the standard error.
func (c *Client) Output(ctx context.Context, name string, args ...string) ([]byte, error) {
	var out, errb limitedBuffer
	st, err := c.Run(ctx, name, Cmd{Args: args, Stdout: &out, Stderr: &errb})
	if err != nil {
		return nil, err
	}
	if !st.Success() {
		return out.b, &ExitError{ExitStatus: st, Stderr: errb.b}
	}
	return out.b, nil
}

// outputLimit bounds what Output keeps of a stream: a guest could send
// without end.
const outputLimit = 64 << 20

type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if len(l.b)+len(p) > outputLimit {
		return 0, fmt.Errorf("mvm: command output over %d bytes: use Run with a writer", outputLimit)
	}
	l.b = append(l.b, p...)
	return len(p), nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// CopyTo copies a host file or directory into VM name: into guestPath if
// that is a directory, else as that name.
func (c *Client) CopyTo(ctx context.Context, name, hostPath, guestPath string) error {
	_, err := c.m.CopyTo(ctx, name, hostPath, guestPath, "")
	return err
}

// CopyFrom copies guestPath out of VM name to hostPath, checked as mvmctl
// cp checks it (nothing lands outside hostPath, bounded in size).
func (c *Client) CopyFrom(ctx context.Context, name, guestPath, hostPath string) error {
	_, err := c.m.CopyFrom(ctx, name, guestPath, hostPath)
	return err
}

// Forward listens on 127.0.0.1:hostPort (0: any free port) and relays each
// connection to guestPort in VM name through its agent, until ctx ends.
// ready is called with the listening address.
func (c *Client) Forward(ctx context.Context, name string, hostPort int, guestPort uint16, ready func(net.Addr)) error {
	return c.m.Forward(ctx, name, []vm.PortForward{{HostPort: hostPort, GuestPort: guestPort}}, func(_ vm.PortForward, a net.Addr) {
		if ready != nil {
			ready(a)
		}
	})
}

// Snapshot saves VM name's disk and memory as snapshot snapName, from
// which UpOptions.FromSnapshot restores clones.
func (c *Client) Snapshot(ctx context.Context, name, snapName string) error {
	_, err := c.m.SnapshotCreate(ctx, name, snapName)
	return err
}

// RemoveSnapshot deletes a snapshot no VM was restored from (or, with
// force, any).
func (c *Client) RemoveSnapshot(ctx context.Context, snapName string, force bool) error {
	return c.m.SnapshotRemove(ctx, snapName, force)
}
