package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/agent/netcfg"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// ioctls of random(4), from <linux/random.h>.
const (
	rndAddEntropy = 0x40085203 // _IOW('R', 0x03, int[2])
	rndReseedCRNG = 0x5207     // _IO('R', 0x07)
)

// guestSys is what the agent does to the machine beyond its own processes:
// post-restore's clock, entropy, hostname and network, and forward's TCP
// dial. Tests and fuzzing swap in fakes: run on a host, the real calls would
// change the host's clock, name and network, or reach its local services.
type guestSys struct {
	dial        func(ctx context.Context, addr string) (net.Conn, error)
	setClock    func(unixNano int64) error
	addEntropy  func(b []byte) (reseeded bool, err error)
	setHostname func(name string) error
	hostname    func() (string, error)
	// configureNetwork applies a network config and summarises it.
	configureNetwork func(ctx context.Context, n *guestcfg.Network) (string, error)
	// mount, unmount and mountInfo (the bytes of /proc/self/mountinfo)
	// serve the secrets tmpfs (secrets.go); run on a host, the real calls
	// would mount over its directories.
	mount     func(source, target, fstype string, flags uintptr, data string) error
	unmount   func(target string, flags int) error
	mountInfo func() ([]byte, error)
}

// postRestoreNetworkWait bounds the network step: the NIC is already there
// after a restore, so this only guards against a wedged netlink.
const postRestoreNetworkWait = 10 * time.Second

var realGuestSys = guestSys{
	dial: func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: forwardDialTimeout}
		return d.DialContext(ctx, "tcp", addr)
	},
	setClock: func(ns int64) error {
		tv := unix.NsecToTimeval(ns)
		return unix.Settimeofday(&tv)
	},
	addEntropy:  addEntropy,
	setHostname: func(name string) error { return unix.Sethostname([]byte(name)) },
	hostname:    os.Hostname,
	configureNetwork: func(ctx context.Context, n *guestcfg.Network) (string, error) {
		return netcfg.Configure(ctx, n, netcfg.DefaultEtc)
	},
	mount:     unix.Mount,
	unmount:   unix.Unmount,
	mountInfo: readMountInfo,
}

// postRestore steps the clock, credits fresh entropy, reseeds the CRNG, sets
// the hostname and reconfigures the network, then answers with what it did.
// A clone must not keep its parent's clock, random state, name or address.
func (s *Server) postRestore(w *wire, args json.RawMessage) error {
	req, err := proto.ParsePostRestore(args)
	if err != nil {
		return w.fail(proto.Errorf(proto.CodeBadRequest, "%v", err))
	}
	var res proto.PostRestoreResult
	if req.UnixNano > 0 {
		before := time.Now()
		if err := s.sys.setClock(req.UnixNano); err != nil {
			return w.fail(proto.Errorf(proto.CodeInternal, "set clock: %v", err))
		}
		res.ClockStepMS = (req.UnixNano - before.UnixNano()) / 1e6
	}
	if len(req.Entropy) > 0 {
		reseeded, err := s.sys.addEntropy(req.Entropy)
		if err != nil {
			return w.fail(proto.Errorf(proto.CodeInternal, "add entropy: %v", err))
		}
		res.EntropyBytes, res.Reseeded = len(req.Entropy), reseeded
	}
	if req.Hostname != "" {
		if err := s.sys.setHostname(req.Hostname); err != nil {
			return w.fail(proto.Errorf(proto.CodeInternal, "set hostname: %v", err))
		}
	}
	if req.Network != nil {
		// Not the connection's context (dispatch does not pass it here): a
		// half-applied network is worse than finishing after the host left.
		ctx, cancel := context.WithTimeout(context.Background(), postRestoreNetworkWait)
		summary, err := s.sys.configureNetwork(ctx, req.Network)
		cancel()
		if err != nil {
			// Health shows it too: the parent's "network" stage no longer holds.
			s.cfg.Stages.Fail(proto.StageNetwork, err.Error())
			return w.fail(proto.Errorf(proto.CodeInternal, "configure network: %v", err))
		}
		s.cfg.Stages.Mark(proto.StageNetwork, "lo up; "+summary)
		res.Network = summary
	}
	if req.HostPublicKey != "" {
		if s.cfg.Rekey == nil {
			return w.fail(proto.Errorf(proto.CodeBadRequest, "this agent cannot change its keys"))
		}
		// Later connections only: this one was authenticated with the old
		// keys and finishes with them.
		if err := s.cfg.Rekey(req.HostPublicKey, req.GuestPrivateKey); err != nil {
			return w.fail(proto.Errorf(proto.CodeBadRequest, "new keys: %v", err))
		}
		res.Rekeyed = true
	}
	res.Hostname, _ = s.sys.hostname()
	res.AgentUnixNano = time.Now().UnixNano()
	// Logged after answering: the console is slow, and the host is waiting.
	err = respond(w, res)
	s.log.Info("post-restore applied", "hostname", res.Hostname, "clock_step_ms", res.ClockStepMS, "entropy", res.EntropyBytes, "network", res.Network)
	return err
}

// addEntropy credits b to the input pool (RNDADDENTROPY needs
// CAP_SYS_ADMIN, which the agent has as init) and forces a CRNG reseed.
// Without the capability the bytes are still mixed in by a plain write,
// uncredited. It reports whether the reseed happened.
func addEntropy(b []byte) (bool, error) {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(b))
	*(*int32)(unsafe.Pointer(&info[0])) = int32(len(b) * 8)
	*(*int32)(unsafe.Pointer(&info[4])) = int32(len(b))
	copy(info[8:], b)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndAddEntropy, uintptr(unsafe.Pointer(&info[0]))); errno != 0 {
		if _, werr := f.Write(b); werr != nil {
			return false, fmt.Errorf("RNDADDENTROPY: %v; write: %w", errno, werr)
		}
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndReseedCRNG, 0)
	return errno == 0, nil
}
