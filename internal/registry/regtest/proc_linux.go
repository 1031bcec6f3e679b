package regtest

import "syscall"

// procAttr puts a server in its own process group, so Stop can end its
// children too, and has the kernel kill it if the test binary dies first
// (a timeout's panic skips the cleanups).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
