package vm

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// FindAgent locates the static mvm-agent binary that images embed:
// $MVM_AGENT_BIN, next to the mvmctl executable, ../libexec/mvm/, then PATH.
func FindAgent() (string, error) {
	var tried []string
	try := func(p string) (string, bool) {
		if p == "" {
			return "", false
		}
		tried = append(tried, p)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, true
		}
		return "", false
	}
	if v := os.Getenv("MVM_AGENT_BIN"); v != "" {
		p, ok := try(v)
		if !ok {
			return "", fmt.Errorf("MVM_AGENT_BIN=%s: no such file", v)
		}
		return p, checkStatic(p)
	}
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		for _, c := range []string{filepath.Join(dir, "mvm-agent"), filepath.Join(dir, "..", "libexec", "mvm", "mvm-agent")} {
			if p, ok := try(c); ok {
				return p, checkStatic(p)
			}
		}
	}
	if p, err := exec.LookPath("mvm-agent"); err == nil {
		return p, checkStatic(p)
	}
	return "", fmt.Errorf("mvm-agent binary not found (looked at %v and PATH): build it with 'make build' or set MVM_AGENT_BIN", tried)
}

// checkStatic refuses a dynamically linked agent: it runs as PID 1 in an
// initramfs with no libc.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("mvm-agent %s: not an ELF binary: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New("mvm-agent " + p + " is dynamically linked: rebuild it with CGO_ENABLED=0 ('make build')")
		}
	}
	return nil
}
