package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/tarx"
)

// copyRequest decodes and checks a copy request.
func copyRequest(args json.RawMessage, op string) (proto.CopyRequest, *proto.Error) {
	var req proto.CopyRequest
	if err := decodeArgs(args, &req); err != nil {
		return req, proto.Errorf(proto.CodeBadRequest, "%s args: %v", op, err)
	}
	if !filepath.IsAbs(req.Path) {
		return req, proto.Errorf(proto.CodeBadRequest, "%s: guest path %q must be absolute", op, req.Path)
	}
	return req, nil
}

// copyIn extracts the client's tar stream at the request's path: into it
// when it is a directory, else as that name in its parent directory. The
// path is resolved without following a guest user's symlinks (resolveCopyPath)
// and everything is written through the directory it resolved to.
func (s *Server) copyIn(w *wire, args json.RawMessage) error {
	req, perr := copyRequest(args, proto.OpCopyIn)
	if perr != nil {
		return w.fail(perr)
	}
	cp, rerr := resolveCopyPath(s.cfg.CopyRoot, req.Path, true)
	if rerr != nil {
		return w.fail(rerr.prefix("copy-in"))
	}
	defer cp.close()
	var o tarx.Options
	root := cp.dir
	switch {
	case cp.name == ".":
	case cp.exists && cp.st.Mode&unix.S_IFMT == unix.S_IFDIR:
		sub, err := cp.openDir()
		if err != nil {
			return w.fail(proto.Errorf(proto.CodeInternal, "copy-in: %s: %v", req.Path, err))
		}
		defer sub.Close()
		root = sub
	default:
		o.Rename = cp.name
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
	st, err := tarx.ExtractRoot(in, root, o)
	if err == nil {
		// The tar end marker may come before the stream's end.
		_, err = io.Copy(io.Discard, in)
	}
	if err != nil {
		return s.streamFailed(w, "copy-in", err)
	}
	return w.sendJSON(proto.TDone, proto.CopyResult{Files: st.Files, Bytes: st.Bytes})
}

// copyOut streams a tar of the request's path. A symlink at the path
// itself is archived as a link; one on the way to it is followed only when
// root made it (resolveCopyPath).
func (s *Server) copyOut(w *wire, args json.RawMessage) error {
	req, perr := copyRequest(args, proto.OpCopyOut)
	if perr != nil {
		return w.fail(perr)
	}
	cp, rerr := resolveCopyPath(s.cfg.CopyRoot, req.Path, false)
	if rerr != nil {
		return w.fail(rerr.prefix("copy-out"))
	}
	defer cp.close()
	if !cp.exists {
		return w.fail(proto.Errorf(proto.CodeNotFound, "copy-out: %s: %v", req.Path, syscall.ENOENT))
	}
	if err := respond(w, nil); err != nil {
		return err
	}
	out := dataWriter{w}
	st, err := tarx.WriteRoot(out, cp.dir, cp.name, tarx.TopName(req.Path))
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

// copyPath is a request path resolved under the copy root: the directory
// that holds its last component, opened, and that component.
type copyPath struct {
	dir    *os.Root    // the directory holding name
	name   string      // last component; "." when the path is dir itself
	exists bool        // whether name exists
	st     unix.Stat_t // lstat of name, when it exists
	guest  string      // the resolved guest path, for messages
	fds    []int       // directories opened on the way, closed by close
}

func (c *copyPath) close() {
	if c.dir != nil {
		c.dir.Close()
	}
	for _, fd := range c.fds {
		unix.Close(fd)
	}
}

// openDir opens name, an existing directory, as a root, and makes sure it
// is still the directory resolveCopyPath saw.
func (c *copyPath) openDir() (*os.Root, error) {
	sub, err := c.dir.OpenRoot(c.name)
	if err != nil {
		return nil, err
	}
	if err := sameDir(sub, &c.st); err != nil {
		sub.Close()
		return nil, fmt.Errorf("%s: %w", c.guest, err)
	}
	return sub, nil
}

// copyPathError is a resolution failure with its protocol code.
type copyPathError struct {
	code, msg string
}

func (e *copyPathError) prefix(op string) *proto.Error {
	return proto.Errorf(e.code, "%s: %s", op, e.msg)
}

// maxCopyLinks bounds the symlinks followed while resolving one path
// (Linux's MAXSYMLINKS).
const maxCopyLinks = 40

// resolveCopyPath resolves guestPath under copyRoot one component at a
// time, each opened relative to the last with O_NOFOLLOW, so nothing a
// guest user can change redirects it. A symlink on the way is followed
// only when it is root's and lies in a directory only root can write
// (trustedLink: /bin -> usr/bin on merged-/usr systems); any other one
// (a guest user's /tmp/x -> /etc) is refused. The last component is
// followed the same way when followLast, else left as it is. ".." never
// climbs above copyRoot, which stands for the guest's /.
func resolveCopyPath(copyRoot, guestPath string, followLast bool) (*copyPath, *copyPathError) {
	internal := func(err error) *copyPathError {
		return &copyPathError{proto.CodeInternal, fmt.Sprintf("%s: %v", guestPath, err)}
	}
	rootFd, err := unix.Open(copyRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, internal(fmt.Errorf("copy root %s: %w", copyRoot, err))
	}
	type dir struct {
		fd    int
		guest string // its guest path
	}
	cp := &copyPath{fds: []int{rootFd}}
	stack := []dir{{rootFd, "/"}}
	fail := func(e *copyPathError) (*copyPath, *copyPathError) {
		cp.close()
		return nil, e
	}
	todo := splitPath(guestPath)
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		cur := stack[len(stack)-1]
		switch c {
		case ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		last := len(todo) == 0
		guest := path.Join(cur.guest, c)
		var st unix.Stat_t
		err := unix.Fstatat(cur.fd, c, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case errors.Is(err, unix.ENOENT) && last:
			return cp.done(copyRoot, cur.fd, cur.guest, c, nil, guest)
		case errors.Is(err, unix.ENOENT):
			return fail(&copyPathError{proto.CodeNotFound, fmt.Sprintf("guest directory %s does not exist", guest)})
		case err != nil:
			return fail(internal(fmt.Errorf("%s: %w", guest, err)))
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			if last && !followLast {
				return cp.done(copyRoot, cur.fd, cur.guest, c, &st, guest)
			}
			if why := trustedLink(cur.fd, &st); why != "" {
				return fail(&copyPathError{proto.CodeDenied, fmt.Sprintf("%s: refusing to follow symlink %s (%s)", guestPath, guest, why)})
			}
			if links++; links > maxCopyLinks {
				return fail(internal(fmt.Errorf("%s: %w", guest, unix.ELOOP)))
			}
			target, err := readlinkat(cur.fd, c)
			if err != nil {
				return fail(internal(fmt.Errorf("%s: %w", guest, err)))
			}
			if strings.HasPrefix(target, "/") {
				stack = stack[:1]
			}
			todo = append(splitPath(target), todo...)
			continue
		}
		if last {
			return cp.done(copyRoot, cur.fd, cur.guest, c, &st, guest)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fail(&copyPathError{proto.CodeBadRequest, fmt.Sprintf("%s: %s is not a directory", guestPath, guest)})
		}
		fd, err := unix.Openat(cur.fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			// Swapped for a symlink since the stat: refused all the same.
			return fail(internal(fmt.Errorf("%s: %w", guest, err)))
		}
		cp.fds = append(cp.fds, fd)
		stack = append(stack, dir{fd, guest})
	}
	// The path names a directory itself (the root, or via "." or "..").
	top := stack[len(stack)-1]
	var st unix.Stat_t
	if err := unix.Fstat(top.fd, &st); err != nil {
		return fail(internal(err))
	}
	return cp.done(copyRoot, top.fd, top.guest, ".", &st, top.guest)
}

// done opens dirFd, the directory at guest path dirGuest, as cp.dir and
// records name.
func (cp *copyPath) done(copyRoot string, dirFd int, dirGuest, name string, st *unix.Stat_t, guest string) (*copyPath, *copyPathError) {
	root, err := openRootFd(dirFd, filepath.Join(copyRoot, dirGuest))
	if err != nil {
		cp.close()
		return nil, &copyPathError{proto.CodeInternal, fmt.Sprintf("%s: %v", guest, err)}
	}
	cp.dir, cp.name, cp.guest = root, name, guest
	if st != nil {
		cp.exists, cp.st = true, *st
	}
	return cp, nil
}

// openRootFd opens the directory fd refers to, found at name, as an
// os.Root. os.OpenRoot takes a name, which may have been redirected since
// fd was opened: the root is checked to be the same directory, so it is
// either fd's or refused (no /proc needed).
func openRootFd(fd int, name string) (*os.Root, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(name)
	if err != nil {
		return nil, err
	}
	if err := sameDir(root, &st); err != nil {
		root.Close()
		return nil, err
	}
	return root, nil
}

// sameDir checks that root is the directory st describes.
func sameDir(root *os.Root, st *unix.Stat_t) error {
	fi, err := root.Stat(".")
	if err != nil {
		return err
	}
	rst, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || uint64(rst.Dev) != uint64(st.Dev) || uint64(rst.Ino) != uint64(st.Ino) {
		return errors.New("changed while being resolved")
	}
	return nil
}

// trustedLink says why the symlink described by st, in directory dirFd,
// may not be followed ("" when it may): a guest user cannot have made or
// changed a link that root owns in a directory root owns and only root
// can write.
func trustedLink(dirFd int, st *unix.Stat_t) string {
	if st.Uid != 0 {
		return fmt.Sprintf("it belongs to uid %d", st.Uid)
	}
	var dst unix.Stat_t
	if err := unix.Fstat(dirFd, &dst); err != nil {
		return err.Error()
	}
	if dst.Uid != 0 || dst.Mode&0o022 != 0 {
		return "its directory is writable by others than root"
	}
	return ""
}

func readlinkat(dirFd int, name string) (string, error) {
	for size := 256; size <= 1<<16; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirFd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
	return "", unix.ENAMETOOLONG
}

// splitPath splits p into its components, without empty ones.
func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}
