package vm

import (
	"context"
	"io"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// Console opens the interactive console of a running VM. The caller puts
// its terminal in raw mode, forwards resizes and waits on the process.
func (m *Manager) Console(ctx context.Context, name string, req proto.ConsoleRequest, stdin io.Reader, stdout io.Writer) (*client.Process, error) {
	c, err := m.Agent(ctx, name, "open a console on")
	if err != nil {
		return nil, err
	}
	return c.Console(ctx, req, stdin, stdout)
}
