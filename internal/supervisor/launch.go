// Package supervisor is the small per-VM process that owns the VMM: it starts
// QEMU as its child, records identities and the exit status, relays agent
// connections over the virtio-serial port, and outlives the CLI that
// launched it.
//
// The supervisor runs as the small mvm-supervisor binary when it is installed
// next to mvmctl (it imports only this package, so it stays a few MiB of
// RSS per VM), else as the calling binary re-executed with Arg as its first
// argument. Either main must dispatch before anything else:
//
//	if len(os.Args) > 1 && os.Args[1] == supervisor.Arg {
//		os.Exit(supervisor.Main(os.Args[2:]))
//	}
//
// Test binaries that call Launch need the same lines in TestMain.
package supervisor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// Arg selects supervisor mode in the re-executed binary.
const Arg = "__supervise"

// Launch starts a detached supervisor for the VM in dir and returns its pid.
// It does not wait for the VMM; callers watch PidsFile, ExitFile and the QMP
// socket.
func Launch(ctx context.Context, dir string, cfg Config) (int, error) {
	if len(cfg.Argv) == 0 {
		return 0, fmt.Errorf("launch supervisor: empty VMM command line")
	}
	for _, f := range []string{ExitFile, PidsFile} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !os.IsNotExist(err) {
			return 0, fmt.Errorf("launch supervisor: %w", err)
		}
	}
	if err := writeJSON(filepath.Join(dir, ConfigFile), cfg); err != nil {
		return 0, fmt.Errorf("launch supervisor: write config: %w", err)
	}
	self, err := binary()
	if err != nil {
		return 0, fmt.Errorf("launch supervisor: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(dir, LogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("launch supervisor: %w", err)
	}
	defer logf.Close()
	// Not CommandContext: the supervisor must survive the caller's context.
	cmd := exec.Command(self, Arg, dir)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("launch supervisor: %w", err)
	}
	// Reap it if it exits while we still run; otherwise init adopts it.
	go cmd.Wait()
	return cmd.Process.Pid, nil
}

// BinaryName is the dedicated supervisor executable.
const BinaryName = "mvm-supervisor"

// binary picks the program to run as supervisor: $MVM_SUPERVISOR_BIN, then
// mvm-supervisor beside the running executable, then the running executable.
func binary() (string, error) {
	if p := os.Getenv("MVM_SUPERVISOR_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("MVM_SUPERVISOR_BIN: %w", err)
		}
		return p, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	if p := filepath.Join(filepath.Dir(self), BinaryName); p != self {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return self, nil
}
