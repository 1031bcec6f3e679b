package supervisor

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
)

// Helper is a process the VMM needs beside it for its whole life (passt,
// the user-mode network stack): started before the VMM and killed once the
// VMM has exited. The two talk over a socket pair the supervisor makes:
// the helper gets its end as descriptor 3, the VMM its end after the
// Listen descriptors (FirstListenFD+len(Listen)+i for helper i), so no
// socket path is shared and nothing polls for one.
type Helper struct {
	Name string   `json:"name"`
	Argv []string `json:"argv"`
	Log  string   `json:"log"`
}

// HelperFD is the descriptor number of a helper's end of its socket pair.
const HelperFD = 3

// startHelpers starts each helper and returns the VMM's ends of their
// socket pairs. On error the ones already started are stopped.
func startHelpers(hs []Helper, log *slog.Logger) (vmmEnds []*os.File, stop func(), err error) {
	var cmds []*exec.Cmd
	stop = func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
	fail := func(err error) ([]*os.File, func(), error) {
		for _, f := range vmmEnds {
			f.Close()
		}
		stop()
		return nil, nil, err
	}
	for _, h := range hs {
		if len(h.Argv) == 0 {
			return fail(fmt.Errorf("helper %q: no command line", h.Name))
		}
		fds, err := socketpairCloexec(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
		if err != nil {
			return fail(fmt.Errorf("helper %s: socketpair: %w", h.Name, err))
		}
		mine := os.NewFile(uintptr(fds[0]), h.Name+"-helper")
		vmmEnds = append(vmmEnds, os.NewFile(uintptr(fds[1]), h.Name+"-vmm"))
		cmd := exec.Command(h.Argv[0], h.Argv[1:]...)
		cmd.ExtraFiles = []*os.File{mine} // descriptor 3
		if h.Log != "" {
			f, err := os.OpenFile(h.Log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				mine.Close()
				return fail(fmt.Errorf("helper %s: %w", h.Name, err))
			}
			cmd.Stdout, cmd.Stderr = f, f
			defer f.Close()
		}
		cmd.SysProcAttr = childAttr(syscall.SIGKILL)
		err = cmd.Start()
		mine.Close()
		if err != nil {
			return fail(fmt.Errorf("start %s (%s): %w", h.Name, h.Argv[0], err))
		}
		cmds = append(cmds, cmd)
		log.Info("helper started", "name", h.Name, "pid", cmd.Process.Pid)
	}
	return vmmEnds, stop, nil
}
