package server

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// Respawn backoff: doubled after each quick exit, reset after a long run.
const (
	serviceBackoffMin = 100 * time.Millisecond
	serviceBackoffMax = 10 * time.Second
	serviceStableRun  = 10 * time.Second
)

// RunServices starts the image's services in order and keeps them running
// until ctx ends: each is exec'd (no shell) as its user, in its own process
// group, and started again with backoff when it exits. Output lines go to
// the agent's log (the VM console). The services stage is done while every
// service is running.
func (s *Server) RunServices(ctx context.Context, specs []ServiceSpec) {
	status := make([]proto.ServiceStatus, len(specs))
	for i, sp := range specs {
		status[i] = proto.ServiceStatus{Name: sp.Name, Detail: "starting"}
	}
	s.services.reset(status)
	s.markServices()
	for i, spec := range specs {
		go s.superviseService(ctx, i, spec)
	}
}

func (s *Server) setService(i int, f func(*proto.ServiceStatus)) {
	s.services.update(i, f)
	s.markServices()
}

func (s *Server) markServices() {
	st := s.services.snapshot()
	var bad []string
	for _, x := range st {
		if !x.Running {
			bad = append(bad, x.Name+": "+x.Detail)
		}
	}
	s.markSummary(proto.StageServices, len(st), bad, "running")
}

func (s *Server) superviseService(ctx context.Context, i int, spec ServiceSpec) {
	backoff := serviceBackoffMin
	for ctx.Err() == nil {
		began := time.Now()
		detail, err := s.runService(ctx, i, spec)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			detail = err.Error()
		}
		if time.Since(began) > serviceStableRun {
			backoff = serviceBackoffMin
		}
		s.log.Warn("service stopped; restarting", "service", spec.Name, "detail", detail, "in", backoff)
		s.setService(i, func(st *proto.ServiceStatus) {
			st.Running, st.Pid, st.Detail = false, 0, detail
		})
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, serviceBackoffMax)
		s.setService(i, func(st *proto.ServiceStatus) { st.Restarts++ })
	}
}

// runService starts one instance and waits for it; it returns how it ended.
func (s *Server) runService(ctx context.Context, i int, spec ServiceSpec) (string, error) {
	es, perr := s.prepareExec(&proto.ExecRequest{Argv: spec.Command, User: spec.User})
	if perr != nil {
		return "", perr
	}
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		r.Close()
		w.Close()
		return "", err
	}
	attr := &os.ProcAttr{Dir: es.dir, Env: es.env, Files: []*os.File{null, w, w},
		Sys: &syscall.SysProcAttr{Setpgid: true, Credential: es.cred}}
	proc, err := s.start(es.path, es.argv, attr)
	null.Close()
	w.Close()
	if err != nil {
		r.Close()
		return "", startError(es, err)
	}
	s.log.Info("service started", "service", spec.Name, "pid", proc.Pid)
	s.setService(i, func(st *proto.ServiceStatus) { st.Running, st.Pid, st.Detail = true, proc.Pid, "" })
	go s.logOutput(spec.Name, r)
	select {
	case <-proc.Done():
	case <-ctx.Done():
		_ = unix.Kill(-proc.Pid, unix.SIGTERM)
		<-proc.Done()
	}
	ws := proc.Status()
	if ws.Signaled() {
		return "killed by " + unix.SignalName(ws.Signal()), nil
	}
	return fmt.Sprintf("exited with status %d", ws.ExitStatus()), nil
}

// logOutput copies a service's output to the agent log line by line.
func (s *Server) logOutput(name string, r *os.File) {
	defer r.Close()
	br := bufio.NewReaderSize(r, 4096)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			s.log.Info("service output", "service", name, "line", strings.ToValidUTF8(strings.TrimRight(string(line), "\r\n"), "?"))
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}
