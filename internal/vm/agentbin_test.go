package vm

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestFindAgentForForeignArch(t *testing.T) {
	foreign := "arm64"
	if runtime.GOARCH == "arm64" {
		foreign = "amd64"
	}
	env := "MVM_AGENT_BIN_" + strings.ToUpper(foreign)
	// A bare ELF header: static (no PT_INTERP), which is all FindAgentFor checks.
	self := filepath.Join(t.TempDir(), "mvm-agent-"+foreign)
	h := make([]byte, 64)
	copy(h, "\x7fELF\x02\x01\x01")
	h[16], h[20], h[52], h[54], h[58] = 2, 1, 64, 56, 64
	if err := os.WriteFile(self, h, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, env, wantErr string
		want               string
	}{
		{name: "override names the file", env: self, want: self},
		{name: "override missing", env: filepath.Join(t.TempDir(), "nope"), wantErr: env + "="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(env, tt.env)
			// The host's own variable never answers for a foreign arch.
			t.Setenv("MVM_AGENT_BIN", "/nonexistent/mvm-agent")
			got, err := FindAgentFor(foreign)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if got != tt.want {
				t.Fatalf("FindAgentFor(%s) = %q, %v; want %q", foreign, got, err, tt.want)
			}
		})
	}
	// Unset, the lookup names the binary and how to build it.
	t.Setenv(env, "")
	t.Setenv("PATH", t.TempDir())
	if _, err := FindAgentFor(foreign); err == nil || !strings.Contains(err.Error(), "mvm-agent-"+foreign) || !strings.Contains(err.Error(), "GOARCH="+foreign) {
		t.Fatalf("err = %v, want it to name mvm-agent-%s and how to build it", err, foreign)
	}
}
