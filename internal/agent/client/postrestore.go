package client

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// PostRestore re-provisions a guest restored from a snapshot (clock,
// entropy, hostname) and returns once the agent has applied all of it.
func (c *Client) PostRestore(ctx context.Context, req proto.PostRestoreRequest) (*proto.PostRestoreResult, error) {
	cn, res, err := c.call(ctx, proto.OpPostRestore, req)
	if err != nil {
		return nil, err
	}
	cn.close()
	var r proto.PostRestoreResult
	if err := json.Unmarshal(res, &r); err != nil {
		return nil, fmt.Errorf("decode post-restore result: %w", err)
	}
	return &r, nil
}
