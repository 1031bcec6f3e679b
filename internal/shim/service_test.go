//go:build linux

package shim

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mvm-dev/mvm/pkg/mvm"
)

// fakeVMs runs "processes" in the test: `exit N` ends with N at once,
// anything else runs until signalled; each writes its argv to stdout.
type fakeVMs struct {
	mu      sync.Mutex
	up      []mvm.UpOptions
	removed []string
	cmds    []mvm.Cmd
}

func (f *fakeVMs) Up(_ context.Context, o mvm.UpOptions) (*mvm.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.up = append(f.up, o)
	return &mvm.VM{Name: o.Name, State: "running"}, nil
}

func (f *fakeVMs) Remove(_ context.Context, name string, _ bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, name)
	return nil
}

func (f *fakeVMs) StartCmd(_ context.Context, _ string, cmd mvm.Cmd) (Proc, error) {
	f.mu.Lock()
	f.cmds = append(f.cmds, cmd)
	pid := 100 + len(f.cmds)
	f.mu.Unlock()
	p := &fakeProc{pid: pid, exit: make(chan int, 1)}
	fmt.Fprintln(cmd.Stdout, strings.Join(cmd.Args, " "))
	if len(cmd.Args) == 2 && cmd.Args[0] == "exit" {
		n, _ := strconv.Atoi(cmd.Args[1])
		p.exit <- n
	}
	return p, nil
}

type fakeProc struct {
	pid  int
	exit chan int
	once sync.Once
}

func (p *fakeProc) Pid() int { return p.pid }
func (p *fakeProc) Signal(sig syscall.Signal) error {
	p.once.Do(func() {
		select {
		case p.exit <- 128 + int(sig):
		default:
		}
	})
	return nil
}
func (p *fakeProc) Resize(uint16, uint16) error { return nil }
func (p *fakeProc) Wait() (mvm.ExitStatus, error) {
	return mvm.ExitStatus{Code: <-p.exit}, nil
}

// bundle makes a bundle with a config.json running args and a rootfs
// directory, and a stdout FIFO whose contents come back on the channel.
func bundle(t *testing.T, args ...string) (string, string, func() string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "rootfs", "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = strconv.Quote(a)
	}
	spec := `{"process":{"args":[` + strings.Join(q, ",") + `],"cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"rootfs"}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	path, out := fifo(t, dir, "stdout")
	return dir, path, out
}

// fifo makes a FIFO with a reader open (as containerd's is before it
// calls the shim) and a writer of the test's, so the reader sees EOF only
// once the test calls done (after the shim closed its end): the shim's
// writer may come and go before the reader goroutine runs.
func fifo(t *testing.T, dir, name string) (string, func() string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.SetNonblock(int(r.Fd()), false); err != nil {
		t.Fatal(err)
	}
	out := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		r.Close()
		out <- string(b)
	}()
	t.Cleanup(func() { w.Close() })
	return path, func() string {
		w.Close()
		select {
		case s := <-out:
			return s
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no EOF: the shim kept its end open", name)
			return ""
		}
	}
}

func code(err error) codes.Code { return status.Code(err) }

func TestServiceLifecycle(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		if _, err := os.Stat("/sbin/mkfs.ext4"); err != nil {
			t.Skip("needs mkfs.ext4 (e2fsprogs)")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vms := &fakeVMs{}
	exited := make(chan struct{})
	s := NewService(Config{Namespace: "ns", ID: "c1", VMs: vms, Backend: "qemu", Exit: func() { close(exited) }})

	dir, stdout, out := bundle(t, "sleep", "600")
	if _, err := s.Start(ctx, &taskapi.StartRequest{ID: "c1"}); code(err) != codes.NotFound {
		t.Fatalf("start before create: %v", err)
	}
	if _, err := s.Create(ctx, &taskapi.CreateTaskRequest{ID: "c1", Bundle: dir, Stdout: stdout}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, &taskapi.CreateTaskRequest{ID: "c1", Bundle: dir}); code(err) != codes.AlreadyExists {
		t.Fatalf("second create: %v", err)
	}
	if len(vms.up) != 1 || vms.up[0].Name != VMName("ns", "c1") || vms.up[0].Backend != "qemu" || vms.up[0].Network != "none" ||
		len(vms.up[0].Disks) != 1 || vms.up[0].Disks[0].Path != filepath.Join(dir, rootfsImage) {
		t.Fatalf("Up: %+v", vms.up)
	}
	if _, err := os.Stat(filepath.Join(dir, rootfsImage)); err != nil {
		t.Fatalf("rootfs disk: %v", err)
	}
	st, err := s.State(ctx, &taskapi.StateRequest{ID: "c1"})
	if err != nil || st.Status != task.Status_CREATED {
		t.Fatalf("state after create: %v %v", st, err)
	}

	sr, err := s.Start(ctx, &taskapi.StartRequest{ID: "c1"})
	if err != nil || sr.Pid == 0 {
		t.Fatalf("start: %v %v", sr, err)
	}
	if c := vms.cmds[0]; c.Rootfs != "LABEL="+VMName("ns", "c1") || c.User != "0:0" || c.Dir != "/" {
		t.Fatalf("command: %+v", c)
	}
	if _, err := s.Start(ctx, &taskapi.StartRequest{ID: "c1"}); code(err) != codes.FailedPrecondition {
		t.Fatalf("second start: %v", err)
	}

	// An exec: its own output and exit code; deleted on its own.
	estdout, eout := fifo(t, t.TempDir(), "exec-out")
	spec, _ := anypb.New(&anypb.Any{}) // any Any; the Value is what counts
	spec.Value = []byte(`{"args":["exit","5"],"cwd":"/"}`)
	sleepSpec, _ := anypb.New(&anypb.Any{})
	sleepSpec.Value = []byte(`{"args":["sleep","600"],"cwd":"/"}`)
	if _, err := s.Exec(ctx, &taskapi.ExecProcessRequest{ID: "c1", ExecID: "e1", Stdout: estdout, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Exec(ctx, &taskapi.ExecProcessRequest{ID: "c1", ExecID: "e1", Spec: spec}); code(err) != codes.AlreadyExists {
		t.Fatalf("duplicate exec: %v", err)
	}
	if _, err := s.Start(ctx, &taskapi.StartRequest{ID: "c1", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	w, err := s.Wait(ctx, &taskapi.WaitRequest{ID: "c1", ExecID: "e1"})
	if err != nil || w.ExitStatus != 5 {
		t.Fatalf("exec wait: %v %v", w, err)
	}
	if got := eout(); got != "exit 5\n" {
		t.Fatalf("exec stdout %q", got)
	}
	if _, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "c1", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.State(ctx, &taskapi.StateRequest{ID: "c1", ExecID: "e1"}); code(err) != codes.NotFound {
		t.Fatalf("deleted exec: %v", err)
	}

	pids, err := s.Pids(ctx, &taskapi.PidsRequest{ID: "c1"})
	if err != nil || len(pids.Processes) != 1 || pids.Processes[0].Pid != sr.Pid {
		t.Fatalf("pids: %v %v", pids, err)
	}
	if _, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "c1"}); code(err) != codes.FailedPrecondition {
		t.Fatalf("delete while running: %v", err)
	}
	if _, err := s.Shutdown(ctx, &taskapi.ShutdownRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		t.Fatal("shutdown with a live task ended the shim")
	default:
	}

	// An exec still running when the container's init ends ends with it.
	if _, err := s.Exec(ctx, &taskapi.ExecProcessRequest{ID: "c1", ExecID: "e3", Spec: sleepSpec}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(ctx, &taskapi.StartRequest{ID: "c1", ExecID: "e3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Kill(ctx, &taskapi.KillRequest{ID: "c1", Signal: uint32(syscall.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	if w, err := s.Wait(ctx, &taskapi.WaitRequest{ID: "c1", ExecID: "e3"}); err != nil || w.ExitStatus != 137 {
		t.Fatalf("exec after its init ended: %v %v", w, err)
	}
	w, err = s.Wait(ctx, &taskapi.WaitRequest{ID: "c1"})
	if err != nil || w.ExitStatus != 137 {
		t.Fatalf("wait after kill: %v %v", w, err)
	}
	if got := out(); got != "sleep 600\n" {
		t.Fatalf("stdout %q", got)
	}
	if _, err := s.Exec(ctx, &taskapi.ExecProcessRequest{ID: "c1", ExecID: "e2", Spec: spec}); code(err) != codes.FailedPrecondition {
		t.Fatalf("exec into a stopped task: %v", err)
	}
	d, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "c1"})
	if err != nil || d.ExitStatus != 137 {
		t.Fatalf("delete: %v %v", d, err)
	}
	if len(vms.removed) != 1 || vms.removed[0] != VMName("ns", "c1") {
		t.Fatalf("removed %v", vms.removed)
	}
	for _, f := range []string{rootfsImage, vmNameFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s left in the bundle: %v", f, err)
		}
	}
	if _, err := s.Shutdown(ctx, &taskapi.ShutdownRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown after delete did not end the shim")
	}
}

// A container never started ends at Delete (as with runc), with SIGKILL's
// status, and its VM goes.
func TestServiceDeleteCreated(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		if _, err := os.Stat("/sbin/mkfs.ext4"); err != nil {
			t.Skip("needs mkfs.ext4 (e2fsprogs)")
		}
	}
	ctx := context.Background()
	vms := &fakeVMs{}
	s := NewService(Config{Namespace: "ns", ID: "c2", VMs: vms})
	dir, stdout, _ := bundle(t, "true")
	if _, err := s.Create(ctx, &taskapi.CreateTaskRequest{ID: "c2", Bundle: dir, Stdout: stdout}); err != nil {
		t.Fatal(err)
	}
	d, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "c2"})
	if err != nil || d.ExitStatus != 137 || len(vms.removed) != 1 {
		t.Fatalf("delete: %v %v, removed %v", d, err, vms.removed)
	}
	if len(vms.cmds) != 0 {
		t.Fatalf("a never-started task ran %v", vms.cmds)
	}
}
