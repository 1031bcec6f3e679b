// Package kvmprobe decides whether KVM can really run guests on this host.
// /dev/kvm existing is not enough: nested and PVM hosts expose the node but
// fail or hang when a vCPU runs. The probe builds a tiny VM, runs a few bytes
// of real-mode code and checks the exit it produces.
package kvmprobe

import (
	"context"
	"sync"
	"time"
)

// Timeout bounds one probe; a vCPU that has not exited by then counts as unusable.
const Timeout = 2 * time.Second

// Device is the KVM device node.
const Device = "/dev/kvm"

var (
	mu     sync.Mutex
	done   bool
	usable bool
	reason string
)

// Probe reports whether KVM can run a guest, and why (for doctor). The answer
// is computed once per process.
func Probe(ctx context.Context) (bool, string) {
	mu.Lock()
	defer mu.Unlock()
	if !done {
		pctx, cancel := context.WithTimeout(ctx, Timeout)
		defer cancel()
		usable, reason = probe(pctx)
		// A caller that gave up early says nothing about KVM; only our own
		// timeout is a verdict worth caching.
		done = ctx.Err() == nil
	}
	return usable, reason
}

// Reason returns the cached explanation, probing first if needed.
func Reason(ctx context.Context) string {
	_, r := Probe(ctx)
	return r
}
