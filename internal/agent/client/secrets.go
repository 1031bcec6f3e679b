package client

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// Secrets installs req's secrets in the guest's proto.SecretsDir in place
// of any earlier set; an empty set removes them all and unmounts the
// secrets tmpfs. The values travel only inside the authenticated
// connection; the caller still owns req and should Wipe it when done.
func (c *Client) Secrets(ctx context.Context, req proto.SecretsRequest) (*proto.SecretsResult, error) {
	if req.Secrets == nil {
		req.Secrets = []proto.Secret{} // "secrets":[] rather than null: the whole set, empty
	}
	cn, res, err := c.call(ctx, proto.OpSecrets, req)
	if err != nil {
		return nil, err
	}
	cn.close()
	var r proto.SecretsResult
	if err := json.Unmarshal(res, &r); err != nil {
		return nil, fmt.Errorf("decode secrets result: %w", err)
	}
	return &r, nil
}
