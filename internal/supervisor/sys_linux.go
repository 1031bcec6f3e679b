package supervisor

import "syscall"

// childAttr puts a child in its own process group and has the kernel send
// it sig when the thread that started it dies, so nothing the supervisor
// starts outlives a supervisor killed outright.
func childAttr(sig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: sig}
}

// socketCloexec is socket(2) with the descriptor closed on exec, atomically.
func socketCloexec(domain, typ, proto int) (int, error) {
	return syscall.Socket(domain, typ|syscall.SOCK_CLOEXEC, proto)
}

// socketpairCloexec is socketpair(2) with both ends closed on exec.
func socketpairCloexec(domain, typ, proto int) ([2]int, error) {
	return syscall.Socketpair(domain, typ|syscall.SOCK_CLOEXEC, proto)
}
