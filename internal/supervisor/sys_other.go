//go:build !linux

package supervisor

import "syscall"

// childAttr puts a child in its own process group. Only Linux has a
// parent-death signal; elsewhere a supervisor killed outright (SIGKILL)
// leaves its children running, and rm's cleanup has to find them.
func childAttr(syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// socketCloexec is socket(2) then FD_CLOEXEC; the fork lock keeps a
// concurrent exec from inheriting the descriptor in between, as the
// standard library does where SOCK_CLOEXEC is missing.
func socketCloexec(domain, typ, proto int) (int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fd, err := syscall.Socket(domain, typ, proto)
	if err != nil {
		return -1, err
	}
	syscall.CloseOnExec(fd)
	return fd, nil
}

// socketpairCloexec is socketpair(2) then FD_CLOEXEC on both ends.
func socketpairCloexec(domain, typ, proto int) ([2]int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fds, err := syscall.Socketpair(domain, typ, proto)
	if err != nil {
		return fds, err
	}
	syscall.CloseOnExec(fds[0])
	syscall.CloseOnExec(fds[1])
	return fds, nil
}
