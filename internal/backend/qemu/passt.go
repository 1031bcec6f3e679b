package qemu

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/supervisor"
)

// User-mode networking is QEMU's built-in stack by default. passt (a
// process of its own beside QEMU, over the stream netdev of QEMU 7.2+) is
// used with MVM_USERNET=passt when it is installed: the passt Debian 12
// ships (2023-03) was seen holding guest connections open after the far
// end closed them, so it is not the default yet.

// passtBinary is the passt to use, or "" for QEMU's built-in stack.
func passtBinary(ctx context.Context, qemuBin string) string {
	if os.Getenv("MVM_USERNET") != "passt" {
		return ""
	}
	p, err := exec.LookPath("passt")
	if err != nil {
		return ""
	}
	if !hasStreamNetdev(ctx, qemuBin) {
		return ""
	}
	return p
}

var streamProbe sync.Map // QEMU binary path → bool

// hasStreamNetdev asks QEMU which netdev backends it has.
func hasStreamNetdev(ctx context.Context, bin string) bool {
	path, err := exec.LookPath(bin)
	if err != nil {
		return false
	}
	if v, ok := streamProbe.Load(path); ok {
		return v.(bool)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-netdev", "help").Output()
	ok := err == nil && strings.Contains(string(out), "stream")
	if ctx.Err() == nil {
		streamProbe.Store(path, ok)
	}
	return ok
}

// passtHelper is the supervisor helper serving user-mode NIC n over the
// socket pair the supervisor hands it as descriptor supervisor.HelperFD.
func passtHelper(bin, dir string, n backend.NIC) (supervisor.Helper, error) {
	u := n.User
	ones := 24
	if i := strings.IndexByte(u.Subnet, '/'); i >= 0 {
		if v, err := strconv.Atoi(u.Subnet[i+1:]); err == nil {
			ones = v
		}
	}
	argv := []string{bin, "--foreground", "--quiet", "--ipv4-only",
		"--fd", strconv.Itoa(supervisor.HelperFD),
		"--address", u.GuestIP, "--netmask", strconv.Itoa(ones), "--gateway", u.Gateway,
		"--dns-forward", u.DNS, "--mac-addr", "9a:55:9a:55:9a:55",
		"--udp-ports", "none"}
	var tcp, udp []string
	for _, f := range u.Forwards {
		spec := fmt.Sprintf("%s/%d:%d", f.HostIP, f.HostPort, f.GuestPort)
		switch f.Proto {
		case "tcp":
			tcp = append(tcp, spec)
		case "udp":
			udp = append(udp, spec)
		default:
			return supervisor.Helper{}, fmt.Errorf("NIC %s: forward protocol %q", n.ID, f.Proto)
		}
	}
	if len(udp) > 0 {
		argv = argv[:len(argv)-2]
	}
	if len(tcp) == 0 {
		argv = append(argv, "--tcp-ports", "none")
	}
	for _, s := range tcp {
		argv = append(argv, "--tcp-ports", s)
	}
	for _, s := range udp {
		argv = append(argv, "--udp-ports", s)
	}
	return supervisor.Helper{Name: "passt", Argv: argv, Log: filepath.Join(dir, "passt-"+n.ID+".log")}, nil
}
