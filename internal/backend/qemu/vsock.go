package qemu

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"syscall"
	"unsafe"

	"github.com/mdlayher/vsock"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

// vhostVsock is the host device vhost-vsock-device needs.
const vhostVsock = "/dev/vhost-vsock"

// How a VM gets its vsock guest CID.
//
// vhost-vsock CIDs are global to the host, shared by every user's VMs, and
// the kernel already arbitrates them: VHOST_VSOCK_SET_GUEST_CID fails with
// EADDRINUSE while another open /dev/vhost-vsock holds the CID (QEMU's
// vhost-vsock-device then exits with "Address already in use"). So the
// allocator keeps no registry of its own: no shared directory that another
// user could pre-create, fill, or plant symlinks in, and no claim file that
// could name a VM. It draws a random CID, binds it on a /dev/vhost-vsock
// descriptor of its own to learn whether it is free, releases it, and
// draws again while the kernel says it is taken. A running VM's QEMU holds
// its CID for as long as it lives, so it is never handed out twice; a
// stopped VM holds none (every start and restore allocates afresh).
//
// The CID is unbound between our probe and QEMU's bind, a few tens of
// milliseconds. Drawing from 2^31 values makes two allocators (this user's
// or another's) landing on the same CID in that window negligible; one that
// still loses the race fails to start with QEMU's error, and no running VM
// is affected. (A local user who reads QEMU's command line and binds its CID
// first can only fail that start; closing even that needs the probe's
// descriptor handed to QEMU as vhostfd=.)

// vhostVsockSetGuestCID is _IOW(VHOST_VIRTIO, 0x60, __u64) from <linux/vhost.h>.
const vhostVsockSetGuestCID = 0x4008af60

// CIDs are drawn from [minCID, maxCID): 0-2 are reserved (hypervisor, local,
// host) and some tools read CIDs as signed 32-bit numbers.
const (
	minCID = 3
	maxCID = 1 << 31
)

// cidTries bounds the draws. A draw fails only on a CID in use, so running
// out means the device refuses everything, not bad luck.
const cidTries = 64

// Seams for tests: cidDraw picks a candidate, cidProbe asks the kernel.
var (
	cidDraw  = func() uint32 { return minCID + rand.Uint32N(maxCID-minCID) }
	cidProbe = probeCID
)

// allocateCID returns a vsock guest CID no VM on this host holds now.
func allocateCID() (uint32, error) {
	for range cidTries {
		cid := cidDraw()
		err := cidProbe(cid)
		if err == nil {
			return cid, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return 0, fmt.Errorf("vsock guest CID: %w", err)
		}
	}
	return 0, fmt.Errorf("vsock guest CID: every one of %d random CIDs is in use", cidTries)
}

// probeCID binds cid on a vhost-vsock instance of our own and releases it
// at once: nil means no VM holds it; a wrapped EADDRINUSE means one does.
func probeCID(cid uint32) error {
	fd, err := syscall.Open(vhostVsock, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", vhostVsock, err)
	}
	defer syscall.Close(fd)
	v := uint64(cid)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), vhostVsockSetGuestCID, uintptr(unsafe.Pointer(&v))); e != 0 {
		return fmt.Errorf("set guest CID %d on %s: %w", cid, vhostVsock, e)
	}
	return nil
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
