//go:build linux

package network

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// SetLinkUp brings one of our links up or down. A clone restored from a
// snapshot wakes with its parent's MAC and address and may send with them
// (ARP, retransmits) until post-restore gives it its own; its TAP stays
// down until then, so nothing it sends under the parent's identity
// reaches the network.
func SetLinkUp(name string, up bool) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if up {
		err = netlink.LinkSetUp(l)
	} else {
		err = netlink.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("set %s up=%v: %w", name, up, err)
	}
	return nil
}
