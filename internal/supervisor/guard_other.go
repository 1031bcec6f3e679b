//go:build !linux

package supervisor

import (
	"errors"
	"log/slog"
	"os/exec"
)

// The VMM guard holds a pidfd and relies on a parent-death signal, both
// Linux-only; it is only asked for when QEMU drops root (-runas), which
// the QEMU backend does on Linux alone.
var errNoGuard = errors.New("vmm guard: needs Linux (pidfd, parent-death signal)")

func startGuard(int, *slog.Logger) (*exec.Cmd, error) { return nil, errNoGuard }

func runGuard(_ []string, log *slog.Logger) int {
	log.Error(errNoGuard.Error())
	return 2
}
