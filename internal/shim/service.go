//go:build linux

package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/mvm-dev/mvm/internal/image"
	"github.com/mvm-dev/mvm/pkg/mvm"
)

var _ taskapi.TaskService = (*Service)(nil)

// Files the shim keeps in the bundle directory.
const (
	rootfsImage = "mvm-rootfs.ext4" // the container's disk
	vmNameFile  = "mvm-vm"          // the VM's name, for `shim delete` after a crash
)

// rootfsFree is the room a container gets to write in its rootfs.
const rootfsFree = 256 << 20

// VMs is what the shim needs of mvm: pkg/mvm's Client (ClientVMs), or a
// fake in tests.
type VMs interface {
	Up(ctx context.Context, o mvm.UpOptions) (*mvm.VM, error)
	StartCmd(ctx context.Context, name string, cmd mvm.Cmd) (Proc, error)
	Remove(ctx context.Context, name string, force bool) error
}

// Proc is a process in a VM (*mvm.Process).
type Proc interface {
	Pid() int
	Signal(sig syscall.Signal) error
	Resize(cols, rows uint16) error
	Wait() (mvm.ExitStatus, error)
}

var _ Proc = (*mvm.Process)(nil)

// ClientVMs adapts an *mvm.Client to VMs.
type ClientVMs struct{ *mvm.Client }

var _ VMs = ClientVMs{}

// StartCmd is the Client's, returning a Proc.
func (c ClientVMs) StartCmd(ctx context.Context, name string, cmd mvm.Cmd) (Proc, error) {
	p, err := c.Client.StartCmd(ctx, name, cmd)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Config is one shim's identity and its collaborators.
type Config struct {
	Namespace, ID string
	VMs           VMs
	Backend       string // mvm backend ("qemu")
	Image         string // mvm image the VM boots ("": the default)
	MemoryMiB     int
	Publisher     *publisher
	Log           *slog.Logger
	// Exit is called once the shim should end (Shutdown).
	Exit func()
}

// Service is the task v2 service of one container.
type Service struct {
	cfg Config
	log *slog.Logger
	// ctx outlives requests: processes run under it until Delete.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	bundle  string
	vm      string // "" until Create booted it
	label   string
	init    *proc
	execs   map[string]*proc
	deleted bool
}

// proc is the container's process or one exec's.
type proc struct {
	id, execID   string
	spec         *process
	stdin        string
	stdout       string
	stderr       string
	terminal     bool
	mu           sync.Mutex
	status       task.Status
	pid          uint32
	exitStatus   uint32
	exitedAt     time.Time
	p            Proc
	stdinR       *stdinFIFO
	done         chan struct{}
	pendingSize  [2]uint16
	resizePended bool
}

// NewService returns the service; it boots nothing before Create.
func NewService(cfg Config) *Service {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{cfg: cfg, log: cfg.Log, ctx: ctx, cancel: cancel, execs: map[string]*proc{}}
}

// VMName is the VM a container of ns runs in; stable, so `shim delete`
// finds it without the shim's memory.
func VMName(ns, id string) string {
	h := sha256.Sum256([]byte(ns + "/" + id))
	return "ctr-" + hex.EncodeToString(h[:6])
}

func errf(c codes.Code, format string, a ...any) error { return status.Errorf(c, format, a...) }

func (s *Service) lookup(id, execID string) (*proc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.init == nil || id != s.cfg.ID {
		return nil, errf(codes.NotFound, "task %s not found", id)
	}
	if execID == "" {
		return s.init, nil
	}
	p, ok := s.execs[execID]
	if !ok {
		return nil, errf(codes.NotFound, "exec %s of task %s not found", execID, id)
	}
	return p, nil
}

// Create boots the container's VM with its rootfs as a second disk; the
// process starts on Start.
func (s *Service) Create(ctx context.Context, r *taskapi.CreateTaskRequest) (_ *taskapi.CreateTaskResponse, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.init != nil {
		return nil, errf(codes.AlreadyExists, "task %s already created", r.ID)
	}
	if r.ID != s.cfg.ID {
		return nil, errf(codes.InvalidArgument, "shim of %s asked to create %s", s.cfg.ID, r.ID)
	}
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return nil, errf(codes.Unimplemented, "mvm shim: checkpoints are not supported")
	}
	sp, err := loadSpec(r.Bundle)
	if err != nil {
		return nil, errf(codes.InvalidArgument, "%v", err)
	}
	rootDir := filepath.Join(r.Bundle, "rootfs")
	if sp.Root != nil && sp.Root.Path != "" {
		rootDir = sp.Root.Path
		if !filepath.IsAbs(rootDir) {
			rootDir = filepath.Join(r.Bundle, rootDir)
		}
	}
	start := time.Now()
	if len(r.Rootfs) > 0 {
		if err := mountAll(r.Rootfs, rootDir); err != nil {
			return nil, errf(codes.Internal, "%v", err)
		}
	}
	// The tree is copied into the disk; the host mount is not needed
	// after that (the container writes to its disk, not the snapshot).
	disk := filepath.Join(r.Bundle, rootfsImage)
	s.label = VMName(s.cfg.Namespace, r.ID) // 16 bytes: all an ext4 label holds
	_, buildErr := image.Ext4FromDir(ctx, rootDir, disk, s.label, rootfsFree)
	if len(r.Rootfs) > 0 {
		if err := unmountAll(rootDir); err != nil && buildErr == nil {
			buildErr = err
		}
	}
	if buildErr != nil {
		os.Remove(disk)
		return nil, errf(codes.Internal, "container rootfs: %v", buildErr)
	}
	built := time.Since(start)
	name := VMName(s.cfg.Namespace, r.ID)
	if err := os.WriteFile(filepath.Join(r.Bundle, vmNameFile), []byte(name), 0o600); err != nil {
		os.Remove(disk)
		return nil, errf(codes.Internal, "record VM name: %v", err)
	}
	readOnly := sp.Root != nil && sp.Root.Readonly
	if _, err := s.cfg.VMs.Up(ctx, mvm.UpOptions{
		Name: name, Backend: s.cfg.Backend, Image: s.cfg.Image, MemoryMiB: s.cfg.MemoryMiB, Network: "none",
		Disks: []mvm.Disk{{ID: "ctr", Path: disk, ReadOnly: readOnly}},
	}); err != nil {
		s.removeVM(name, r.Bundle)
		return nil, errf(codes.Internal, "boot VM for %s: %v", r.ID, err)
	}
	s.log.Info("container VM up", "id", r.ID, "vm", name, "rootfs_build", built, "total", time.Since(start))
	s.bundle, s.vm = r.Bundle, name
	s.init = &proc{id: r.ID, spec: sp.Process, stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr,
		terminal: r.Terminal, status: task.Status_CREATED, done: make(chan struct{})}
	s.cfg.Publisher.publish("/tasks/create", &eventstypes.TaskCreate{
		ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs, IO: &eventstypes.TaskIO{
			Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
	})
	return &taskapi.CreateTaskResponse{}, nil
}

// removeVM removes the VM and the disk; errors are logged, as there is
// nobody left to return them to.
func (s *Service) removeVM(name, bundle string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.cfg.VMs.Remove(ctx, name, true); err != nil {
		s.log.Warn("remove VM", "vm", name, "err", err)
	}
	os.Remove(filepath.Join(bundle, rootfsImage))
	os.Remove(filepath.Join(bundle, vmNameFile))
}

// Start runs the container's process, or an exec's, in the VM.
func (s *Service) Start(ctx context.Context, r *taskapi.StartRequest) (*taskapi.StartResponse, error) {
	p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	vmName, label := s.vm, s.label
	s.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status != task.Status_CREATED {
		return nil, errf(codes.FailedPrecondition, "%s is %s, not created", p.name(), p.status)
	}
	stdout := openOutput(p.stdout)
	var stderr io.WriteCloser = nopWriteCloser{io.Discard}
	if !p.terminal {
		stderr = openOutput(p.stderr)
	}
	cmd := mvm.Cmd{Args: p.spec.Args, Env: p.spec.Env, Dir: p.spec.Cwd, User: p.spec.user(), TTY: p.terminal,
		Stdout: stdout, Stderr: stderr, Rootfs: "LABEL=" + label}
	if p.stdin != "" {
		p.stdinR = &stdinFIFO{path: p.stdin}
		cmd.Stdin = p.stdinR
	}
	mp, err := s.cfg.VMs.StartCmd(s.ctx, vmName, cmd)
	if err != nil {
		stdout.Close()
		stderr.Close()
		if p.stdinR != nil {
			p.stdinR.Close()
		}
		return nil, errf(codes.Internal, "start %s: %v", p.name(), err)
	}
	p.p, p.pid, p.status = mp, uint32(mp.Pid()), task.Status_RUNNING
	if p.resizePended {
		_ = mp.Resize(p.pendingSize[0], p.pendingSize[1])
	}
	go s.reap(p, stdout, stderr)
	if p.execID == "" {
		s.cfg.Publisher.publish("/tasks/start", &eventstypes.TaskStart{ContainerID: p.id, Pid: p.pid})
	} else {
		s.cfg.Publisher.publish("/tasks/exec-started", &eventstypes.TaskExecStarted{ContainerID: p.id, ExecID: p.execID, Pid: p.pid})
	}
	return &taskapi.StartResponse{Pid: p.pid}, nil
}

func (p *proc) name() string {
	if p.execID != "" {
		return "exec " + p.execID
	}
	return "task " + p.id
}

// reap waits for the process, records its exit and tells containerd.
func (s *Service) reap(p *proc, stdout, stderr io.Closer) {
	st, err := p.p.Wait()
	code := uint32(st.Code)
	if err != nil {
		// The agent or VM went away: the process is gone with it.
		s.log.Warn("process lost", "proc", p.name(), "err", err)
		code = 128 + uint32(syscall.SIGKILL)
	}
	stdout.Close()
	stderr.Close()
	if p.stdinR != nil {
		p.stdinR.Close()
	}
	p.exit(code)
	s.publishExit(p)
	if p.execID == "" {
		// As in a container's pid namespace, the execs end with its init.
		s.mu.Lock()
		execs := make([]*proc, 0, len(s.execs))
		for _, e := range s.execs {
			execs = append(execs, e)
		}
		s.mu.Unlock()
		for _, e := range execs {
			e.mu.Lock()
			if e.status == task.Status_RUNNING {
				_ = e.p.Signal(syscall.SIGKILL)
			}
			e.mu.Unlock()
		}
	}
}

func (s *Service) publishExit(p *proc) {
	p.mu.Lock()
	ev := &eventstypes.TaskExit{ContainerID: p.id, ID: cmpStr(p.execID, p.id), Pid: p.pid,
		ExitStatus: p.exitStatus, ExitedAt: timestamppb.New(p.exitedAt)}
	p.mu.Unlock()
	s.cfg.Publisher.publish("/tasks/exit", ev)
}

func (p *proc) exit(code uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status == task.Status_STOPPED {
		return
	}
	p.status, p.exitStatus, p.exitedAt = task.Status_STOPPED, code, time.Now()
	close(p.done)
}

func cmpStr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Delete removes an exec's record, or the container: its VM and disk.
func (s *Service) Delete(ctx context.Context, r *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	st, pid, code, at := p.status, p.pid, p.exitStatus, p.exitedAt
	p.mu.Unlock()
	if st == task.Status_RUNNING {
		return nil, errf(codes.FailedPrecondition, "%s is running: kill it first", p.name())
	}
	if st == task.Status_CREATED {
		// Never started: as runc does, deleting it ends it.
		p.exit(128 + uint32(syscall.SIGKILL))
		p.mu.Lock()
		code, at = p.exitStatus, p.exitedAt
		p.mu.Unlock()
	}
	resp := &taskapi.DeleteResponse{Pid: pid, ExitStatus: code, ExitedAt: timestamppb.New(at)}
	if r.ExecID != "" {
		s.mu.Lock()
		delete(s.execs, r.ExecID)
		s.mu.Unlock()
		return resp, nil
	}
	s.mu.Lock()
	vmName, bundle := s.vm, s.bundle
	s.deleted = true
	s.mu.Unlock()
	s.cancel()
	s.removeVM(vmName, bundle)
	s.cfg.Publisher.publish("/tasks/delete", &eventstypes.TaskDelete{
		ContainerID: r.ID, Pid: pid, ExitStatus: code, ExitedAt: resp.ExitedAt,
	})
	return resp, nil
}

// Exec records an exec's process; Start runs it.
func (s *Service) Exec(ctx context.Context, r *taskapi.ExecProcessRequest) (*emptypb.Empty, error) {
	ip, err := s.lookup(r.ID, "")
	if err != nil {
		return nil, err
	}
	if r.ExecID == "" || r.Spec == nil {
		return nil, errf(codes.InvalidArgument, "exec needs an id and a process spec")
	}
	ps, err := parseProcess(r.Spec.Value)
	if err != nil {
		return nil, errf(codes.InvalidArgument, "%v", err)
	}
	ip.mu.Lock()
	running := ip.status == task.Status_RUNNING
	ip.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !running {
		return nil, errf(codes.FailedPrecondition, "task %s is not running", r.ID)
	}
	if _, ok := s.execs[r.ExecID]; ok {
		return nil, errf(codes.AlreadyExists, "exec %s exists", r.ExecID)
	}
	s.execs[r.ExecID] = &proc{id: r.ID, execID: r.ExecID, spec: ps, stdin: r.Stdin, stdout: r.Stdout,
		stderr: r.Stderr, terminal: r.Terminal, status: task.Status_CREATED, done: make(chan struct{})}
	s.cfg.Publisher.publish("/tasks/exec-added", &eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return &emptypb.Empty{}, nil
}

// Kill signals a process (its process group in the guest); All signals
// the container's execs too.
func (s *Service) Kill(ctx context.Context, r *taskapi.KillRequest) (*emptypb.Empty, error) {
	p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	targets := []*proc{p}
	if r.All && r.ExecID == "" {
		s.mu.Lock()
		for _, e := range s.execs {
			targets = append(targets, e)
		}
		s.mu.Unlock()
	}
	for _, t := range targets {
		t.mu.Lock()
		st, mp := t.status, t.p
		t.mu.Unlock()
		switch st {
		case task.Status_CREATED:
			if t == p {
				t.exit(128 + r.Signal)
				s.publishExit(t)
			}
		case task.Status_RUNNING:
			if err := mp.Signal(syscall.Signal(r.Signal)); err != nil && t == p {
				return nil, errf(codes.Internal, "signal %s: %v", t.name(), err)
			}
		case task.Status_STOPPED:
			if t == p {
				return nil, errf(codes.NotFound, "%s: process already finished", t.name())
			}
		}
	}
	return &emptypb.Empty{}, nil
}

// Wait returns once the process has exited.
func (s *Service) Wait(ctx context.Context, r *taskapi.WaitRequest) (*taskapi.WaitResponse, error) {
	p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return &taskapi.WaitResponse{ExitStatus: p.exitStatus, ExitedAt: timestamppb.New(p.exitedAt)}, nil
}

// State reports a process.
func (s *Service) State(ctx context.Context, r *taskapi.StateRequest) (*taskapi.StateResponse, error) {
	p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	bundle := s.bundle
	s.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	resp := &taskapi.StateResponse{ID: p.id, ExecID: p.execID, Bundle: bundle, Pid: p.pid, Status: p.status,
		Stdin: p.stdin, Stdout: p.stdout, Stderr: p.stderr, Terminal: p.terminal, ExitStatus: p.exitStatus}
	if p.status == task.Status_STOPPED {
		resp.ExitedAt = timestamppb.New(p.exitedAt)
	}
	return resp, nil
}

// Pids lists the container's processes by their guest pids.
func (s *Service) Pids(ctx context.Context, r *taskapi.PidsRequest) (*taskapi.PidsResponse, error) {
	p, err := s.lookup(r.ID, "")
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	all := []*proc{p}
	for _, e := range s.execs {
		all = append(all, e)
	}
	s.mu.Unlock()
	resp := &taskapi.PidsResponse{}
	for _, q := range all {
		q.mu.Lock()
		if q.status == task.Status_RUNNING {
			resp.Processes = append(resp.Processes, &task.ProcessInfo{Pid: q.pid})
		}
		q.mu.Unlock()
	}
	return resp, nil
}

// ResizePty resizes a TTY process's terminal (remembered until it starts).
func (s *Service) ResizePty(ctx context.Context, r *taskapi.ResizePtyRequest) (*emptypb.Empty, error) {
	p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	w, h := uint16(min(r.Width, 0xffff)), uint16(min(r.Height, 0xffff))
	if p.p == nil {
		p.pendingSize, p.resizePended = [2]uint16{w, h}, true
		return &emptypb.Empty{}, nil
	}
	if p.status == task.Status_RUNNING {
		if err := p.p.Resize(w, h); err != nil {
			return nil, errf(codes.Internal, "resize: %v", err)
		}
	}
	return &emptypb.Empty{}, nil
}

// CloseIO closes a process's stdin.
func (s *Service) CloseIO(ctx context.Context, r *taskapi.CloseIORequest) (*emptypb.Empty, error) {
	p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	in := p.stdinR
	p.mu.Unlock()
	if r.Stdin && in != nil {
		in.Close()
	}
	return &emptypb.Empty{}, nil
}

// Connect reports the shim's pid and the container process's.
func (s *Service) Connect(ctx context.Context, r *taskapi.ConnectRequest) (*taskapi.ConnectResponse, error) {
	resp := &taskapi.ConnectResponse{ShimPid: uint32(os.Getpid()), Version: "2"}
	if p, err := s.lookup(r.ID, ""); err == nil {
		p.mu.Lock()
		resp.TaskPid = p.pid
		p.mu.Unlock()
	}
	return resp, nil
}

// Shutdown ends the shim once its container is deleted (or when told Now).
func (s *Service) Shutdown(ctx context.Context, r *taskapi.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	live := s.init != nil && !s.deleted
	vmName, bundle := s.vm, s.bundle
	s.mu.Unlock()
	if live && !r.Now {
		return &emptypb.Empty{}, nil
	}
	if live {
		s.cancel()
		s.removeVM(vmName, bundle)
	}
	if s.cfg.Exit != nil {
		s.cfg.Exit()
	}
	return &emptypb.Empty{}, nil
}

var errNotSupported = errors.New("not supported by the mvm shim yet")

// Pause is not supported yet (the VM could be paused as a whole).
func (s *Service) Pause(context.Context, *taskapi.PauseRequest) (*emptypb.Empty, error) {
	return nil, errf(codes.Unimplemented, "pause: %v", errNotSupported)
}

// Resume is not supported yet.
func (s *Service) Resume(context.Context, *taskapi.ResumeRequest) (*emptypb.Empty, error) {
	return nil, errf(codes.Unimplemented, "resume: %v", errNotSupported)
}

// Checkpoint is not supported.
func (s *Service) Checkpoint(context.Context, *taskapi.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, errf(codes.Unimplemented, "checkpoint: %v", errNotSupported)
}

// Update (resource limits) is not supported yet.
func (s *Service) Update(context.Context, *taskapi.UpdateTaskRequest) (*emptypb.Empty, error) {
	return nil, errf(codes.Unimplemented, "update: %v", errNotSupported)
}

// Stats is not supported yet.
func (s *Service) Stats(context.Context, *taskapi.StatsRequest) (*taskapi.StatsResponse, error) {
	return nil, errf(codes.Unimplemented, "stats: %v", errNotSupported)
}

// Cleanup is `shim delete`: containerd's clean-up after a shim died. It
// removes the VM and disk the bundle records.
func Cleanup(ctx context.Context, vms VMs, bundle string, log *slog.Logger) *taskapi.DeleteResponse {
	if b, err := os.ReadFile(filepath.Join(bundle, vmNameFile)); err == nil {
		if err := vms.Remove(ctx, string(b), true); err != nil {
			log.Warn("remove VM", "vm", string(b), "err", err)
		}
	}
	_ = unmountAll(filepath.Join(bundle, "rootfs"))
	os.Remove(filepath.Join(bundle, rootfsImage))
	os.Remove(filepath.Join(bundle, vmNameFile))
	return &taskapi.DeleteResponse{ExitStatus: 128 + uint32(syscall.SIGKILL), ExitedAt: timestamppb.Now()}
}
