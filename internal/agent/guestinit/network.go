package guestinit

import (
	"context"
	"time"

	"github.com/mvm-dev/mvm/internal/agent/netcfg"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/server"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// networkWait bounds the boot's network setup: the NIC wait is 5 s of it.
const networkWait = 10 * time.Second

// ConfigureNetwork applies n: addresses, routes and the IPv6 switch with
// netlink, resolv.conf and hosts under etc ("/etc" in production). It lives
// in netcfg so the server's post-restore op, which guestinit imports and so
// cannot import back, shares the same code.
func ConfigureNetwork(ctx context.Context, n *guestcfg.Network, etc string) (summary string, err error) {
	return netcfg.Configure(ctx, n, etc)
}

// networkUp brings up lo and, when the VM has a NIC, configures it (even
// if lo failed), and records the outcome in the network stage. Failures are
// reported, not fatal: a degraded guest the host can inspect beats none.
func networkUp(c *Console, stages *server.Stages, n *guestcfg.Network) {
	loErr := loopbackUp()
	var summary string
	var err error
	if n != nil {
		ctx, cancel := context.WithTimeout(context.Background(), networkWait)
		summary, err = ConfigureNetwork(ctx, n, "/etc")
		cancel()
		if err != nil {
			c.Printf("network: %v", err)
		} else {
			c.Printf("network: %s", summary)
		}
	}
	switch {
	case loErr != nil && err != nil:
		stages.Fail(proto.StageNetwork, "lo: "+loErr.Error()+"; "+err.Error())
	case loErr != nil:
		stages.Fail(proto.StageNetwork, "lo: "+loErr.Error())
	case err != nil:
		stages.Fail(proto.StageNetwork, err.Error())
	case n == nil:
		stages.Mark(proto.StageNetwork, "lo up")
	default:
		stages.Mark(proto.StageNetwork, "lo up; "+summary)
	}
}
