package qmp

import (
	"context"
	"fmt"
	"time"
)

// MigrationInfo is the part of query-migrate's answer we use. QEMU answers
// {} before any migration, which decodes to Status "".
type MigrationInfo struct {
	Status    string `json:"status"`
	TotalTime int64  `json:"total-time"` // ms
	Downtime  int64  `json:"downtime"`   // ms
	ErrorDesc string `json:"error-desc"`
	RAM       *struct {
		Transferred int64 `json:"transferred"`
		Remaining   int64 `json:"remaining"`
		Total       int64 `json:"total"`
	} `json:"ram"`
}

// Done reports whether the migration reached a final state.
func (m MigrationInfo) Done() bool {
	switch m.Status {
	case "completed", "failed", "cancelled":
		return true
	}
	return false
}

// QueryMigrate returns the state of the current or last migration.
func (c *Client) QueryMigrate(ctx context.Context) (MigrationInfo, error) {
	var m MigrationInfo
	err := c.Execute(ctx, "query-migrate", nil, &m)
	return m, err
}

// SetMigrationCapability turns one migration capability ("events",
// "x-ignore-shared", ...) on or off. The destination of a migration must set
// the same capabilities as its source.
func (c *Client) SetMigrationCapability(ctx context.Context, name string, on bool) error {
	type capability struct {
		Capability string `json:"capability"`
		State      bool   `json:"state"`
	}
	args := map[string]any{"capabilities": []capability{{name, on}}}
	return c.Execute(ctx, "migrate-set-capabilities", args, nil)
}

// SetMigrationMaxBandwidth raises (or lowers) the bytes/s cap, which also
// throttles saving to a file.
func (c *Client) SetMigrationMaxBandwidth(ctx context.Context, bytesPerSec int64) error {
	return c.Execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": bytesPerSec}, nil)
}

// Migrate starts an outgoing migration to uri and returns at once; follow it
// with WaitMigration.
func (c *Client) Migrate(ctx context.Context, uri string) error {
	return c.Execute(ctx, "migrate", map[string]any{"uri": uri}, nil)
}

// MigrateIncoming starts loading a migration stream into a QEMU started with
// -incoming defer; follow it with WaitMigration.
func (c *Client) MigrateIncoming(ctx context.Context, uri string) error {
	return c.Execute(ctx, "migrate-incoming", map[string]any{"uri": uri}, nil)
}

// WaitMigration polls query-migrate until the migration completes, fails or
// ctx ends: after a millisecond at first, backing off to every poll, since a
// small stream is done in a few milliseconds and a large one takes seconds.
// An empty or "none"/"setup" status counts as not started yet: on a
// destination QEMU reports nothing until the stream arrives.
func (c *Client) WaitMigration(ctx context.Context, poll time.Duration) (MigrationInfo, error) {
	wait := min(time.Millisecond, poll)
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		m, err := c.QueryMigrate(ctx)
		if err != nil {
			return m, err
		}
		switch m.Status {
		case "completed":
			return m, nil
		case "failed", "cancelled":
			desc := m.ErrorDesc
			if desc == "" {
				desc = "no detail from QEMU"
			}
			return m, fmt.Errorf("migration %s: %s", m.Status, desc)
		}
		select {
		case <-ctx.Done():
			return m, fmt.Errorf("migration still %q: %w", m.Status, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, poll)
		t.Reset(wait)
	}
}

// FdURI names a descriptor handed over with SendFD as a migration URI. QEMU
// reads or writes it directly: no shell, no helper process.
func FdURI(name string) string { return "fd:" + name }
