package qemu

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/mdlayher/vsock"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

// vhostVsock is the host device vhost-vsock-device needs.
const vhostVsock = "/dev/vhost-vsock"

// cidDir holds one file per guest CID in use. vhost-vsock CIDs are global to
// the host (a second QEMU with the same CID fails to start), so the registry
// lives in a host-wide directory rather than the user's state root.
var cidDir = filepath.Join(os.TempDir(), "mvm-vsock-cids")

// allocateCID claims the lowest free CID ≥ 3 for the VM in dir, under an
// exclusive lock. A claim whose VM no longer runs is stale and reused.
func allocateCID(dir string) (uint32, error) {
	if err := os.MkdirAll(cidDir, 0o1777); err != nil {
		return 0, fmt.Errorf("vsock cid registry: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cidDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return 0, fmt.Errorf("vsock cid registry: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return 0, fmt.Errorf("lock vsock cid registry: %w", err)
	}
	for cid := uint32(3); cid < 1<<16; cid++ {
		p := filepath.Join(cidDir, strconv.FormatUint(uint64(cid), 10))
		if owner, err := os.ReadFile(p); err == nil {
			o := strings.TrimSpace(string(owner))
			if o != dir && vmRunning(o) {
				continue
			}
		}
		if err := os.WriteFile(p, []byte(dir+"\n"), 0o644); err != nil {
			return 0, fmt.Errorf("claim vsock cid %d: %w", cid, err)
		}
		return cid, nil
	}
	return 0, fmt.Errorf("no free vsock CID in %s", cidDir)
}

func vmRunning(dir string) bool {
	p, err := supervisor.ReadPids(dir)
	return err == nil && (p.VMM.Alive() || p.Supervisor.Alive())
}

// dialVsock connects to the agent's AF_VSOCK port, honouring ctx.
func dialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := vsock.Dial(cid, port, nil)
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("dial vsock %d:%d: %w", cid, port, r.err)
		}
		return r.c, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, fmt.Errorf("dial vsock %d:%d: %w", cid, port, ctx.Err())
	}
}
