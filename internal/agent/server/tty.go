package server

import (
	"fmt"
	"os"
	"syscall"

	"github.com/creack/pty"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// Window size used when the client sends none.
const (
	defaultCols = 80
	defaultRows = 24
)

// startPTY starts spec on a new pseudo-terminal: the process leads a new
// session with the PTY as its controlling terminal, so job control, ^C and
// window-size changes behave as in a terminal. Output (stdout and stderr
// merged, as a terminal shows them) travels as stdout frames.
func (s *Server) startPTY(spec *execSpec) (*execution, *proto.Error) {
	master, slave, err := pty.Open()
	if err != nil {
		return nil, proto.Errorf(proto.CodeInternal, "open pty: %v", err)
	}
	if err := setSize(master, spec.size); err != nil {
		master.Close()
		slave.Close()
		return nil, proto.Errorf(proto.CodeInternal, "%v", err)
	}
	attr := &os.ProcAttr{
		Dir:   spec.dir,
		Env:   spec.env,
		Files: []*os.File{slave, slave, slave},
		// Setsid makes the child a process group leader too, so pgid = pid.
		Sys: &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Credential: spec.cred, Chroot: spec.root},
	}
	proc, err := s.start(spec.path, spec.argv, attr)
	slave.Close() // the child has its copy; ours would hide the hang-up
	if err != nil {
		master.Close()
		return nil, startError(spec, err)
	}
	return &execution{
		proc:      proc,
		pgid:      proc.Pid,
		stdout:    master,
		stdin:     master,
		tty:       master,
		timeout:   spec.timeout,
		idle:      spec.idle,
		stdinCh:   make(chan []byte, 4),
		stdinDone: make(chan struct{}),
		finished:  make(chan struct{}),
		writeErr:  make(chan error, 2),
	}, nil
}

func setSize(tty *os.File, r proto.Resize) error {
	ws := &pty.Winsize{Cols: r.Cols, Rows: r.Rows}
	if ws.Cols == 0 {
		ws.Cols = defaultCols
	}
	if ws.Rows == 0 {
		ws.Rows = defaultRows
	}
	if err := pty.Setsize(tty, ws); err != nil {
		return fmt.Errorf("set pty size: %w", err)
	}
	return nil
}
