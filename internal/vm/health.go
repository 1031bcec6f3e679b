package vm

import (
	"context"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// Health asks a running VM's agent for its readiness, services and health
// checks; runChecks runs the image's checks now instead of reporting the
// latest periodic run.
func (m *Manager) Health(ctx context.Context, name string, runChecks bool) (*proto.HealthResult, error) {
	c, err := m.Agent(ctx, name, "check health of")
	if err != nil {
		return nil, err
	}
	return c.HealthWith(ctx, proto.HealthRequest{RunChecks: runChecks})
}
