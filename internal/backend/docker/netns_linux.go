//go:build linux

package docker

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// dropDefaultRouteIn deletes the IPv4 default routes in the network
// namespace of host process pid, from the host side (netlink in that
// namespace; nothing runs in the container). It needs the privileges to
// open another process's namespace (root); none to delete is fine.
func dropDefaultRouteIn(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("no container process (pid %d)", pid)
	}
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return fmt.Errorf("open network namespace of pid %d: %w", pid, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in the namespace of pid %d: %w", pid, err)
	}
	defer h.Close()
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list routes of pid %d: %w", pid, err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if err := h.RouteDel(&r); err != nil {
			return fmt.Errorf("delete default route of pid %d: %w", pid, err)
		}
	}
	return nil
}
