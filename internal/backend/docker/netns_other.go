//go:build !linux

package docker

import "errors"

// dropDefaultRouteIn needs Linux network namespaces.
func dropDefaultRouteIn(int) error {
	return errors.New("network namespaces are Linux-only")
}
