package client

import (
	"context"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// Diff lists the guest's filesystem under req.Root and calls fn for every
// entry, in walk order (a directory before what it holds). Bound it with
// ctx: the stream has no deadline of its own once it started.
func (c *Client) Diff(ctx context.Context, req proto.DiffRequest, fn func(proto.DiffEntry) error) (*proto.DiffResult, error) {
	s, err := c.stream(ctx, proto.OpDiff, req)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if err := proto.ReadDiffEntries(s, fn); err != nil {
		return nil, wrapCtx(ctx, "diff", err)
	}
	var res proto.DiffResult
	if err := s.Result(&res); err != nil {
		return nil, wrapCtx(ctx, "diff", err)
	}
	return &res, nil
}
