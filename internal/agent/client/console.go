package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// Console opens the VM's interactive console on a PTY: stdin is typed into
// it, its output goes to stdout. Wait returns the shell's exit; Resize
// follows the local terminal.
func (c *Client) Console(ctx context.Context, req proto.ConsoleRequest, stdin io.Reader, stdout io.Writer) (*Process, error) {
	cn, res, err := c.call(ctx, proto.OpConsole, req)
	if err != nil {
		return nil, err
	}
	return c.startProcess(ctx, cn, res, stdin, stdout, nil), nil
}

// Resize changes the guest terminal's size (exec with TTY, console).
func (p *Process) Resize(cols, rows uint16) error {
	select {
	case <-p.done:
		return fmt.Errorf("process already finished")
	default:
	}
	return p.cn.sendJSON(proto.TResize, proto.Resize{Cols: cols, Rows: rows})
}

// HealthWith is Health with arguments (RunChecks runs the image's health
// checks now instead of reporting the latest periodic results).
func (c *Client) HealthWith(ctx context.Context, req proto.HealthRequest) (*proto.HealthResult, error) {
	cn, res, err := c.call(ctx, proto.OpHealth, req)
	if err != nil {
		return nil, err
	}
	cn.close()
	var h proto.HealthResult
	if err := json.Unmarshal(res, &h); err != nil {
		return nil, fmt.Errorf("decode health result: %w", err)
	}
	return &h, nil
}
