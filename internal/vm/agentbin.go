package vm

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// FindAgent locates the static mvm-agent binary that images embed:
// $MVM_AGENT_BIN, next to the mvmctl executable, ../libexec/mvm/, then PATH.
func FindAgent() (string, error) { return FindAgentFor("") }

// FindAgentFor is FindAgent for a guest of goarch ("" = the host's). A
// foreign arch's agent is named mvm-agent-<goarch> ('make build' makes it)
// and overridden by $MVM_AGENT_BIN_<GOARCH>; the host's keeps its plain name.
func FindAgentFor(goarch string) (string, error) {
	if goarch != "" && goarch != runtime.GOARCH {
		return findForeignAgent(goarch)
	}
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

func findForeignAgent(goarch string) (string, error) {
	name, env := "mvm-agent-"+goarch, "MVM_AGENT_BIN_"+strings.ToUpper(goarch)
	if v := os.Getenv(env); v != "" {
		if st, err := os.Stat(v); err != nil || !st.Mode().IsRegular() {
			return "", fmt.Errorf("%s=%s: no such file", env, v)
		}
		return v, checkStatic(v)
	}
	var tried []string
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		for _, c := range []string{filepath.Join(dir, name), filepath.Join(dir, "..", "libexec", "mvm", name)} {
			tried = append(tried, c)
			if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
				return c, checkStatic(c)
			}
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, checkStatic(p)
	}
	return "", fmt.Errorf("%s binary not found (looked at %v and PATH): build it with 'make build' (CGO_ENABLED=0 GOARCH=%s go build -o bin/%s ./cmd/mvm-agent) or set %s",
		name, tried, goarch, name, env)
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
