package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// tarTime is every entry's mtime: the tar, and so the Docker image, depends
// only on the files' content, names and modes.
var tarTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// extractRootfs unpacks an ext4 image into dir (which must exist and be
// empty) with debugfs, which needs no root and no loop device. As root it
// keeps owners; otherwise files belong to the caller and writeTar maps them
// to root.
func extractRootfs(ctx context.Context, ext4, dir string) error {
	cmd := exec.CommandContext(ctx, "debugfs", "-R", "rdump / "+dir, ext4)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("debugfs rdump %s: %w: %s", ext4, err, bytes.TrimSpace(out.Bytes()))
	}
	// debugfs reports most failures on stderr with exit status 0; a root
	// without /sbin/mvm-agent is the failure that matters.
	if _, err := os.Lstat(filepath.Join(dir, "sbin", "mvm-agent")); err != nil {
		return fmt.Errorf("debugfs rdump %s: agent missing after extraction (%v): %s", ext4, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// writeTar writes the tree under root as a tar stream in lexical order with
// fixed times, so the same tree always gives the same bytes. lost+found is
// the filesystem's, not the image's, and is left out.
func writeTar(ctx context.Context, root string, w io.Writer) error {
	tw := tar.NewWriter(w)
	euid := os.Geteuid()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		if rel == "lost+found" {
			return filepath.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		h.ModTime, h.AccessTime, h.ChangeTime = tarTime, time.Time{}, time.Time{}
		h.Format = tar.FormatPAX
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			h.Uid, h.Gid = int(st.Uid), int(st.Gid)
			if euid != 0 && h.Uid == euid {
				h.Uid, h.Gid = 0, 0 // extracted without root: the image's files are root's
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.Copy(tw, f); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("tar rootfs: %w", err)
	}
	return tw.Close()
}
