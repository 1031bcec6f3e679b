package server

import (
	"testing"

	"github.com/mvm-dev/mvm/internal/config"
)

// config get reports the agent's console idle default without importing
// the agent: the two constants must agree.
func TestConsoleIdleDefaultMatchesConfig(t *testing.T) {
	if DefaultConsoleIdle != config.BuiltinConsoleIdle {
		t.Fatalf("agent default %v, config.BuiltinConsoleIdle %v", DefaultConsoleIdle, config.BuiltinConsoleIdle)
	}
}
