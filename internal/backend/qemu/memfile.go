package qemu

import (
	"context"

	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/mvm-dev/mvm/internal/backend"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// shmDir holds running VMs' RAM files. Guest RAM is mapped shared from a
// file so a snapshot can copy it; on tmpfs its pages never reach a disk
// (a file in the VM directory gets written back, secrets in guest tmpfs
// included). A variable for tests.
var shmDir = "/dev/shm"

const shmPrefix = "mvm-"

// newMemFile creates the RAM file of a VM started in dir: 0600, a random
// name created exclusively without following links (the directory is
// shared by every user), or the VM directory when there is no usable tmpfs.
func newMemFile(dir string) (string, error) {
	if st, err := os.Stat(shmDir); err == nil && st.IsDir() && unix.Access(shmDir, unix.W_OK) == nil {
		var b [12]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		p := filepath.Join(shmDir, shmPrefix+hex.EncodeToString(b[:])+".mem")
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		if err == nil {
			unix.Close(fd)
			return p, nil
		}
	}
	return filepath.Join(dir, memFile), nil
}

// ownMemFile reports whether p is a RAM file of a VM's own (not a
// snapshot's, which clones map private), so it is removed with the VMM.
func ownMemFile(p, dir string) bool {
	if p == "" {
		return false
	}
	if filepath.Dir(p) == dir {
		return true
	}
	return filepath.Dir(p) == filepath.Clean(shmDir) && strings.HasPrefix(filepath.Base(p), shmPrefix) && strings.HasSuffix(p, ".mem")
}

// removeOwnMem deletes the RAM file a VM in dir last ran with.
func removeOwnMem(dir string) error {
	rec, err := readRecord(dir)
	if err != nil || rec.Launch == nil || !rec.Launch.MemShare || !ownMemFile(rec.Launch.MemPath, dir) {
		return nil
	}
	if err := os.Remove(rec.Launch.MemPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove guest RAM file: %w", err)
	}
	return nil
}

var _ backend.Remover = (*Handle)(nil)

// Remove implements backend.Remover: the VM's RAM file lives outside its
// directory (on tmpfs), so rm deletes it here.
func (h *Handle) Remove(ctx context.Context) error {
	if err := h.Kill(ctx); err != nil {
		return err
	}
	return removeOwnMem(h.dir)
}
