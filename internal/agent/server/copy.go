package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/tarx"
)

// copyTarget validates a request path and maps it under CopyRoot.
func (s *Server) copyTarget(args json.RawMessage, op string) (proto.CopyRequest, string, *proto.Error) {
	var req proto.CopyRequest
	if err := decodeArgs(args, &req); err != nil {
		return req, "", proto.Errorf(proto.CodeBadRequest, "%s args: %v", op, err)
	}
	if !filepath.IsAbs(req.Path) {
		return req, "", proto.Errorf(proto.CodeBadRequest, "%s: guest path %q must be absolute", op, req.Path)
	}
	return req, filepath.Join(s.cfg.CopyRoot, filepath.Clean(req.Path)), nil
}

// copyIn extracts the client's tar stream at the request's path: into it
// when it is a directory, else as that name in its parent directory.
func (s *Server) copyIn(w *wire, args json.RawMessage) error {
	req, target, perr := s.copyTarget(args, proto.OpCopyIn)
	if perr != nil {
		return w.fail(perr)
	}
	var o tarx.Options
	dest := target
	if fi, err := os.Stat(target); err != nil || !fi.IsDir() {
		dest, o.Rename = filepath.Dir(target), filepath.Base(target)
		if fi, err := os.Stat(dest); err != nil || !fi.IsDir() {
			return w.fail(proto.Errorf(proto.CodeNotFound, "copy-in: guest directory %s does not exist", filepath.Dir(req.Path)))
		}
	}
	if req.User != "" {
		acct, err := lookupUser(req.User, s.cfg.PasswdFile, s.cfg.GroupFile)
		if err != nil {
			return w.fail(proto.Errorf(proto.CodeBadRequest, "copy-in user: %v", err))
		}
		o.Chown = &[2]int{int(acct.uid), int(acct.gid)}
	}
	if err := respond(w, nil); err != nil {
		return err
	}
	in := &dataReader{w: w}
	st, err := tarx.Extract(in, dest, o)
	if err == nil {
		// The tar end marker may come before the stream's end.
		_, err = io.Copy(io.Discard, in)
	}
	if err != nil {
		return s.streamFailed(w, "copy-in", err)
	}
	return w.sendJSON(proto.TDone, proto.CopyResult{Files: st.Files, Bytes: st.Bytes})
}

// copyOut streams a tar of the request's path.
func (s *Server) copyOut(w *wire, args json.RawMessage) error {
	req, target, perr := s.copyTarget(args, proto.OpCopyOut)
	if perr != nil {
		return w.fail(perr)
	}
	if _, err := os.Lstat(target); err != nil {
		code := proto.CodeInternal
		if errors.Is(err, fs.ErrNotExist) {
			code = proto.CodeNotFound
		}
		return w.fail(proto.Errorf(code, "copy-out: %s: %v", req.Path, unwrapPath(err)))
	}
	if err := respond(w, nil); err != nil {
		return err
	}
	out := dataWriter{w}
	st, err := tarx.Write(out, target)
	if err == nil {
		err = out.CloseWrite()
	}
	if err != nil {
		return s.streamFailed(w, "copy-out", err)
	}
	return w.sendJSON(proto.TDone, proto.CopyResult{Files: st.Files, Bytes: st.Bytes})
}

// streamFailed reports a failure in the middle of a data stream.
func (s *Server) streamFailed(w *wire, op string, err error) error {
	if e, ok := proto.AsError(err); ok {
		return w.fail(e)
	}
	return w.fail(proto.Errorf(proto.CodeInternal, "%s: %v", op, err))
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return fmt.Errorf("%w", err)
}
