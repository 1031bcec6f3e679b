package qemu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// copySparse copies src to dst (which must not exist), sharing blocks where
// the filesystem can (reflink) and keeping holes otherwise.
func copySparse(ctx context.Context, src, dst string) error {
	out, err := exec.CommandContext(ctx, "cp", "--reflink=auto", "--sparse=always", "--no-preserve=all", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("copy %s: %w: %s", src, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// copyFile copies a small file to dst, replacing it, owner-writable. The
// kernel copies the data (copy_file_range) where it can.
func copyFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	os.Remove(dst)
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}

// allocated returns the bytes path occupies on disk (holes excluded).
func allocated(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512, nil
	}
	return fi.Size(), nil
}

// syncFile flushes path to stable storage.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// qcow2 header fields we read (big-endian, from the start of the file).
const (
	qcow2Magic         = "QFI\xfb"
	qcow2HeaderLen     = 20
	qcow2MaxBackingLen = 1023 // QEMU's own limit
)

// qcow2Backing returns the backing file name recorded in a qcow2 image, or ""
// when it has none.
func qcow2Backing(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return parseQcow2Backing(f)
}

// parseQcow2Backing reads the backing file name from a qcow2 header.
func parseQcow2Backing(r io.ReaderAt) (string, error) {
	var hdr [qcow2HeaderLen]byte
	if _, err := r.ReadAt(hdr[:], 0); err != nil {
		return "", fmt.Errorf("read qcow2 header: %w", err)
	}
	if string(hdr[:4]) != qcow2Magic {
		return "", errors.New("not a qcow2 image")
	}
	off := binary.BigEndian.Uint64(hdr[8:16])
	n := binary.BigEndian.Uint32(hdr[16:20])
	if off == 0 || n == 0 {
		return "", nil
	}
	if n > qcow2MaxBackingLen || off > 1<<40 {
		return "", fmt.Errorf("implausible qcow2 backing file field (offset %d, length %d)", off, n)
	}
	name := make([]byte, n)
	if _, err := r.ReadAt(name, int64(off)); err != nil {
		return "", fmt.Errorf("read qcow2 backing file name: %w", err)
	}
	return string(name), nil
}
