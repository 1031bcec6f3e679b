package image

import (
	"fmt"
	"sort"
	"strings"
)

// recipe describes one catalog image. Only the busybox+agent rootfs source
// exists so far.
type recipe struct {
	name     string
	console  bool
	cpus     int
	memMiB   int
	modules  []string // wanted kernel modules, in preferred load order
	required []string // subset of modules that must exist (or be built in)
	freeMiB  int64    // free space left for users in the root filesystem
}

// guestModules are what a microVM needs to reach its disks, console, agent
// channel, network and entropy over virtio-mmio.
var guestModules = []string{
	"virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "virtio_console",
	"failover", "net_failover", "virtio_net",
	"vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport",
	"virtio_rng",
}

var catalog = map[string]recipe{
	"minimal": {
		name:     "minimal",
		console:  true,
		cpus:     1,
		memMiB:   256,
		modules:  guestModules,
		required: []string{"virtio_mmio", "virtio_blk", "virtio_console"},
		freeMiB:  256,
	},
}

// Known lists the catalog's image names, sorted.
func Known() []string {
	names := make([]string, 0, len(catalog))
	for n := range catalog {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func lookup(name string) (recipe, error) {
	r, ok := catalog[name]
	if !ok {
		return recipe{}, fmt.Errorf("unknown image %q (known: %s)", name, strings.Join(Known(), ", "))
	}
	return r, nil
}

// fingerprint is the recipe's contribution to the digest.
func (r recipe) fingerprint() string {
	return fmt.Sprintf("recipe=%s console=%t cpus=%d mem=%d free=%d modules=%s required=%s",
		r.name, r.console, r.cpus, r.memMiB, r.freeMiB,
		strings.Join(r.modules, ","), strings.Join(r.required, ","))
}
