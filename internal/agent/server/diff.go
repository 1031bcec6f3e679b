package server

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// maxDiffErrors bounds DiffResult.Errors; the count goes on regardless.
const maxDiffErrors = 20

// diff streams the metadata of every object under the request's root, on the
// root's filesystem only, for the host to compare with the image.
func (s *Server) diff(w *wire, args json.RawMessage) error {
	req, err := proto.ParseDiff(args)
	if err != nil {
		return w.fail(proto.Errorf(proto.CodeBadRequest, "%v", err))
	}
	top := filepath.Join(s.cfg.CopyRoot, req.Root)
	st, err := os.Lstat(top)
	if err != nil {
		return w.fail(proto.Errorf(proto.CodeNotFound, "diff: %s: %v", req.Root, unwrapPath(err)))
	}
	if !st.IsDir() {
		return w.fail(proto.Errorf(proto.CodeBadRequest, "diff: %s is not a directory", req.Root))
	}
	if err := respond(w, nil); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(dataWriter{w}, proto.MaxData)
	wk := &diffWalk{req: req, root: s.cfg.CopyRoot, dev: devOf(st), skip: req.Exclude, enc: proto.NewDiffEncoder(bw)}
	if err := filepath.WalkDir(top, wk.visit); err != nil {
		return s.streamFailed(w, "diff", err)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := (dataWriter{w}).CloseWrite(); err != nil {
		return err
	}
	return w.sendJSON(proto.TDone, wk.res)
}

type diffWalk struct {
	req  proto.DiffRequest
	root string // CopyRoot: host prefix of guest paths
	dev  uint64 // the root's filesystem
	skip []string
	enc  *proto.DiffEncoder
	res  proto.DiffResult
}

// visit is the WalkDir callback. Unreadable objects are noted, not fatal:
// a live system changes while it is walked.
func (d *diffWalk) visit(p string, de fs.DirEntry, err error) error {
	guest := d.guestPath(p)
	if err != nil {
		d.note(guest, err)
		if de != nil && de.IsDir() {
			return fs.SkipDir
		}
		return nil
	}
	for _, x := range d.skip {
		if guest == x {
			if de.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
	}
	fi, err := de.Info()
	if err != nil {
		d.note(guest, err)
		return nil
	}
	e, err := d.entry(guest, p, fi)
	if err != nil {
		d.note(guest, err)
		return nil
	}
	if err := d.enc.Encode(e); err != nil {
		return err // the host went away
	}
	d.res.Entries++
	// A mount point is listed, not what is mounted on it (find -xdev).
	if fi.IsDir() && devOf(fi) != d.dev {
		return fs.SkipDir
	}
	return nil
}

func (d *diffWalk) guestPath(p string) string {
	rel, err := filepath.Rel(d.root, p)
	if err != nil {
		return p
	}
	return path.Clean("/" + filepath.ToSlash(rel))
}

func (d *diffWalk) note(guest string, err error) {
	if len(d.res.Errors) < maxDiffErrors {
		d.res.Errors = append(d.res.Errors, fmt.Sprintf("%s: %v", guest, unwrapPath(err)))
	}
}

// entry describes one object; regular files new enough are hashed.
func (d *diffWalk) entry(guest, p string, fi fs.FileInfo) (proto.DiffEntry, error) {
	e := proto.DiffEntry{Path: guest, Mode: uint32(fi.Mode().Perm()), MtimeNS: fi.ModTime().UnixNano()}
	if fi.Mode()&fs.ModeSetuid != 0 {
		e.Mode |= 0o4000
	}
	if fi.Mode()&fs.ModeSetgid != 0 {
		e.Mode |= 0o2000
	}
	if fi.Mode()&fs.ModeSticky != 0 {
		e.Mode |= 0o1000
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.UID, e.GID = int(st.Uid), int(st.Gid)
		e.Rdev = uint64(st.Rdev)
	}
	switch m := fi.Mode(); {
	case m.IsRegular():
		e.Type, e.Size, e.Rdev = proto.DiffFile, fi.Size(), 0
		if d.req.HashNewerThanNS > 0 && e.MtimeNS > d.req.HashNewerThanNS && e.Size <= d.req.HashLimit {
			sum, err := hashRegular(p)
			if err != nil {
				return e, err
			}
			e.SHA256 = sum
			d.res.Hashed++
		}
	case m.IsDir():
		e.Type, e.Rdev = proto.DiffDir, 0
	case m&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return e, err
		}
		e.Type, e.Size, e.Link, e.Rdev = proto.DiffSymlink, fi.Size(), target, 0
	case m&fs.ModeCharDevice != 0:
		e.Type = proto.DiffChar
	case m&fs.ModeDevice != 0:
		e.Type = proto.DiffBlock
	case m&fs.ModeNamedPipe != 0:
		e.Type, e.Rdev = proto.DiffFIFO, 0
	case m&fs.ModeSocket != 0:
		e.Type, e.Rdev = proto.DiffSocket, 0
	default:
		return e, fmt.Errorf("unknown file type %v", m.Type())
	}
	return e, nil
}

// hashRegular hashes a regular file without following a symlink swapped in
// after the walk saw it, nor blocking on a FIFO.
func hashRegular(p string) (string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("no longer a regular file")
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func devOf(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev)
	}
	return 0
}
