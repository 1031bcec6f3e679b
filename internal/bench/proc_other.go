//go:build !linux

package bench

import "syscall"

// childAttr puts a child in its own process group. Only Linux has a
// parent-death signal; elsewhere the bench's own cleanup is all there is.
func childAttr(syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
