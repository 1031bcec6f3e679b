//go:build !linux

package kvmprobe

import (
	"context"
	"runtime"
)

func probe(context.Context) (bool, string) {
	return false, "KVM is Linux-only (this host runs " + runtime.GOOS + ")"
}
