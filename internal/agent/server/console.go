package server

import (
	"context"
	"encoding/json"
	"os"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// DefaultConsoleIdle ends a console nobody has used for this long, so a
// forgotten terminal does not hold the VM's only console slot forever.
const DefaultConsoleIdle = 15 * time.Minute

// console is an exec on a PTY with three differences: the image must allow
// it, only one session runs at a time, and silence ends it.
func (s *Server) console(ctx context.Context, w *wire, args json.RawMessage) error {
	var req proto.ConsoleRequest
	if err := decodeArgs(args, &req); err != nil {
		return w.fail(proto.Errorf(proto.CodeBadRequest, "console args: %v", err))
	}
	if !s.cfg.Console {
		return w.fail(proto.Errorf(proto.CodeDenied,
			"the console is disabled for this VM: its image does not allow it (set [access] console = true in the recipe); use 'mvmctl exec' instead"))
	}
	if !s.consoleBusy.CompareAndSwap(false, true) {
		return w.fail(proto.Errorf(proto.CodeBusy, "console busy: another console session is open on this VM (one at a time)"))
	}
	defer s.consoleBusy.Store(false)

	argv := req.Command
	if len(argv) == 0 {
		argv = []string{s.loginShell(), "-l"}
	}
	term := req.Term
	if term == "" {
		term = "xterm-256color"
	}
	spec, perr := s.prepareExec(&proto.ExecRequest{Argv: argv, TTY: true, Cols: req.Cols, Rows: req.Rows, Env: []string{"TERM=" + term}})
	if perr != nil {
		return w.fail(perr)
	}
	switch {
	case req.IdleTimeoutMS > 0:
		spec.idle = time.Duration(req.IdleTimeoutMS) * time.Millisecond
	case req.IdleTimeoutMS == 0:
		spec.idle = s.cfg.ConsoleIdle
	}
	x, perr := s.startPTY(spec)
	if perr != nil {
		return w.fail(perr)
	}
	x.w = w
	return x.run(ctx)
}

// loginShell is root's shell from the passwd file, else /bin/sh.
func (s *Server) loginShell() string {
	users, _ := readDB(s.cfg.PasswdFile, 7)
	for _, u := range users {
		if u[2] == "0" && u[6] != "" {
			if fi, err := os.Stat(u[6]); err == nil && fi.Mode().IsRegular() && !isNoLogin(u[6]) {
				return u[6]
			}
		}
	}
	return "/bin/sh"
}

func isNoLogin(sh string) bool {
	switch sh {
	case "/sbin/nologin", "/usr/sbin/nologin", "/bin/false", "/usr/bin/false":
		return true
	}
	return false
}
