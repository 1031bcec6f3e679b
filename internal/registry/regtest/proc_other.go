//go:build !linux

package regtest

import "syscall"

// procAttr puts a server in its own process group, so Stop can end its
// children too.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
