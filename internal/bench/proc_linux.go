package bench

import "syscall"

// childAttr puts a child in its own process group and has the kernel send
// it sig if the bench dies first, so a bench killed outright leaves no
// VMM or mvmctl running on.
func childAttr(sig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: sig}
}
