package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// drainTimeout is how long output is still forwarded after the process exits.
// Pipes stay open while a background child of the command holds them; after
// this the agent stops reading and reports the exit anyway.
const drainTimeout = 2 * time.Second

// execStarted is the exec Response's result.
type execStarted struct {
	Pid int `json:"pid"`
}

// execSpec is a validated request, ready to start.
type execSpec struct {
	path    string
	argv    []string
	env     []string
	dir     string
	root    string // chroot into this directory first ("": none)
	cred    *syscall.Credential
	stdin   bool
	timeout time.Duration
	tty     bool
	size    proto.Resize
	idle    time.Duration // console: end the session after this much silence
}

func (s *Server) exec(ctx context.Context, w *wire, args json.RawMessage) error {
	var req proto.ExecRequest
	if err := decodeArgs(args, &req); err != nil {
		return w.fail(proto.Errorf(proto.CodeBadRequest, "exec args: %v", err))
	}
	spec, perr := s.prepareExec(&req)
	if perr != nil {
		return w.fail(perr)
	}
	x, perr := s.startExec(spec)
	if perr != nil {
		return w.fail(perr)
	}
	x.w = w
	return x.run(ctx)
}

// startExec starts spec with pipes, or on a new PTY when it asks for one.
func (s *Server) startExec(spec *execSpec) (*execution, *proto.Error) {
	if spec.tty {
		return s.startPTY(spec)
	}
	return s.startPipes(spec)
}

func (s *Server) prepareExec(req *proto.ExecRequest) (*execSpec, *proto.Error) {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return nil, proto.Errorf(proto.CodeBadRequest, "argv must name a program")
	}
	for _, a := range req.Argv {
		if strings.ContainsRune(a, 0) {
			return nil, proto.Errorf(proto.CodeBadRequest, "argv contains a NUL byte")
		}
	}
	if req.TimeoutMS < 0 {
		return nil, proto.Errorf(proto.CodeBadRequest, "timeout_ms must not be negative")
	}
	spec := &execSpec{argv: req.Argv, stdin: req.Stdin || req.TTY, tty: req.TTY,
		size: proto.Resize{Cols: req.Cols, Rows: req.Rows}, timeout: time.Duration(req.TimeoutMS) * time.Millisecond}

	passwd, group := s.cfg.PasswdFile, s.cfg.GroupFile
	if req.Rootfs != "" {
		root, err := s.rootfs(req.Rootfs)
		if err != nil {
			return nil, proto.Errorf(proto.CodeBadRequest, "rootfs %q: %v", req.Rootfs, err)
		}
		spec.root = root
		passwd, group = filepath.Join(root, "etc/passwd"), filepath.Join(root, "etc/group")
	}

	base := []string{"PATH=" + BasePath, "HOME=/root"}
	if req.User != "" {
		acct, err := lookupUser(req.User, passwd, group)
		if err != nil {
			return nil, proto.Errorf(proto.CodeBadRequest, "user: %v", err)
		}
		spec.cred = acct.credential()
		base[1] = "HOME=" + acct.home
		if acct.name != "" {
			base = append(base, "USER="+acct.name, "LOGNAME="+acct.name)
		}
	} else if uid := os.Getuid(); uid != 0 {
		base[1] = "HOME=" + cmp.Or(homeOf(uid, s.cfg.PasswdFile), "/")
	}
	if req.TTY {
		base = append(base, "TERM=xterm-256color")
	}
	env, err := mergeEnv(base, s.cfg.Env, req.Env)
	if err != nil {
		return nil, proto.Errorf(proto.CodeBadRequest, "env: %v", err)
	}
	spec.env = env

	path, ok := lookPathIn(spec.root, req.Argv[0], getenv(env, "PATH"))
	if !ok {
		return nil, proto.Errorf(proto.CodeNotFound, "executable %q not found in PATH", req.Argv[0])
	}
	spec.path = path

	switch {
	case req.Cwd == "" && spec.root != "":
		// A container starts in its root unless its spec says otherwise.
		spec.dir = "/"
	case req.Cwd == "":
		spec.dir = getenv(env, "HOME")
		if fi, err := os.Stat(spec.dir); err != nil || !fi.IsDir() {
			spec.dir = "/"
		}
	case !filepath.IsAbs(req.Cwd):
		return nil, proto.Errorf(proto.CodeBadRequest, "cwd %q must be absolute", req.Cwd)
	case spec.root != "":
		// Inside another root a symlinked path would resolve against the
		// guest's: leave the check to the chdir after chroot.
		spec.dir = req.Cwd
	default:
		// Checked here so a missing directory is not reported as a
		// missing program (the exec's chdir fails with the same ENOENT).
		if fi, err := os.Stat(req.Cwd); err != nil {
			return nil, proto.Errorf(proto.CodeBadRequest, "working directory %q: %v", req.Cwd, errors.Unwrap(err))
		} else if !fi.IsDir() {
			return nil, proto.Errorf(proto.CodeBadRequest, "working directory %q is not a directory", req.Cwd)
		}
		spec.dir = req.Cwd
	}
	return spec, nil
}

// startPipes creates the pipes and starts the process as leader of its own
// process group, so timeouts, signals and disconnects reach all of it.
func (s *Server) startPipes(spec *execSpec) (*execution, *proto.Error) {
	var closeOnFail []*os.File
	fail := func(err error) (*execution, *proto.Error) {
		for _, f := range closeOnFail {
			f.Close()
		}
		return nil, proto.Errorf(proto.CodeInternal, "%v", err)
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		return fail(fmt.Errorf("stdout pipe: %w", err))
	}
	closeOnFail = append(closeOnFail, stdoutR, stdoutW)
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		return fail(fmt.Errorf("stderr pipe: %w", err))
	}
	closeOnFail = append(closeOnFail, stderrR, stderrW)
	var stdinR, stdinW *os.File
	if spec.stdin {
		stdinR, stdinW, err = os.Pipe()
	} else {
		stdinR, err = os.Open(os.DevNull)
	}
	if err != nil {
		return fail(fmt.Errorf("stdin: %w", err))
	}
	closeOnFail = append(closeOnFail, stdinR)
	if stdinW != nil {
		closeOnFail = append(closeOnFail, stdinW)
	}

	attr := &os.ProcAttr{
		Dir:   spec.dir,
		Env:   spec.env,
		Files: []*os.File{stdinR, stdoutW, stderrW},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Credential: spec.cred, Chroot: spec.root},
	}
	proc, err := s.start(spec.path, spec.argv, attr)
	if err != nil {
		for _, f := range closeOnFail {
			f.Close()
		}
		return nil, startError(spec, err)
	}
	// The child has its copies; ours would keep the pipes from reaching EOF.
	stdinR.Close()
	stdoutW.Close()
	stderrW.Close()
	return &execution{
		proc:      proc,
		pgid:      proc.Pid,
		stdout:    stdoutR,
		stderr:    stderrR,
		stdin:     stdinW,
		timeout:   spec.timeout,
		stdinCh:   make(chan []byte, 4),
		stdinDone: make(chan struct{}),
		finished:  make(chan struct{}),
		writeErr:  make(chan error, 2),
	}, nil
}

func startError(spec *execSpec, err error) *proto.Error {
	code := proto.CodeInternal
	switch {
	case errors.Is(err, fs.ErrNotExist):
		code = proto.CodeNotFound
	case errors.Is(err, fs.ErrPermission):
		code = proto.CodeDenied
	}
	return proto.Errorf(code, "start %s: %v", spec.argv[0], err)
}
