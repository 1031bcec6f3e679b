package vm

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/tarx"
)

// CopyTo copies the host file or directory src to guestPath in VM name:
// into guestPath when it is a directory, else as that name. Modes are kept;
// files belong to user (default root).
func (m *Manager) CopyTo(ctx context.Context, name, src, guestPath, user string) (*proto.CopyResult, error) {
	if _, err := os.Lstat(src); err != nil {
		return nil, err
	}
	c, err := m.Agent(ctx, name, "copy to")
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := tarx.Write(pw, src)
		pw.CloseWithError(err)
	}()
	res, err := c.CopyIn(ctx, proto.CopyRequest{Path: guestPath, User: user}, pr)
	pr.Close()
	if err != nil {
		return nil, fmt.Errorf("copy %s to %s:%s: %w", src, name, guestPath, err)
	}
	return res, nil
}

// CopyFrom copies guestPath in VM name to the host path dst: into dst when
// it is a directory, else as that name. The archive is untrusted and
// extracted with tarx's guards.
func (m *Manager) CopyFrom(ctx context.Context, name, guestPath, dst string) (*proto.CopyResult, error) {
	var o tarx.Options
	dest := dst
	if fi, err := os.Stat(dst); err != nil || !fi.IsDir() {
		dest, o.Rename = filepath.Dir(dst), filepath.Base(dst)
		if fi, err := os.Stat(dest); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("copy to %s: directory %s does not exist", dst, dest)
		}
	}
	c, err := m.Agent(ctx, name, "copy from")
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := tarx.Extract(pr, dest, o)
		if err == nil {
			_, err = io.Copy(io.Discard, pr) // tar padding after the end marker
		}
		pr.CloseWithError(err)
		done <- err
	}()
	res, err := c.CopyOut(ctx, proto.CopyRequest{Path: guestPath}, pw)
	pw.CloseWithError(err)
	if xerr := <-done; err == nil {
		err = xerr
	}
	if err != nil {
		return nil, fmt.Errorf("copy %s:%s to %s: %w", name, guestPath, dst, err)
	}
	return res, nil
}
