package guestinit

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/agent/reaper"
	"github.com/mvm-dev/mvm/internal/agent/server"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

// ServiceOptions configures `mvm-agent serve`.
type ServiceOptions struct {
	ConfigFile string    // optional guest config (mvm.json)
	Listen     *Endpoint // overrides the config's transport
	Version    string
	Log        *slog.Logger
}

// Service serves until SIGTERM/SIGINT or the shutdown operation, which here
// stops the agent rather than the machine: in a container or under another
// init, the system is not ours to power off.
func Service(ctx context.Context, o ServiceOptions) error {
	var cfg *guestcfg.Config
	if o.ConfigFile != "" {
		f, err := os.Open(o.ConfigFile)
		if err != nil {
			return fmt.Errorf("read config: %w", err)
		}
		cfg, err = guestcfg.Decode(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", o.ConfigFile, err)
		}
	}
	// Authentication is not optional: without keys there is nobody we
	// could safely serve.
	keys, err := NewKeys(cfg)
	if err != nil {
		return fmt.Errorf("refusing to serve: %w (pass --config with the keys)", err)
	}
	var ep Endpoint
	switch {
	case o.Listen != nil:
		ep = *o.Listen
	case cfg != nil:
		ep = EndpointFromConfig(cfg.Transport)
	default:
		return fmt.Errorf("no listen address: pass --listen or a --config with a transport")
	}
	r, err := reaper.Default()
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(ctx, unix.SIGTERM, unix.SIGINT)
	defer cancel()
	sc := server.Config{
		Log:          o.Log,
		Reaper:       r,
		AgentVersion: o.Version,
		Shutdown:     func(bool) { cancel() },
		Wrap:         keys.Wrap,
		Rekey:        keys.Rekey,
		Env:          cfg.Env,
		Console:      cfg.Policy.Console,
	}
	o.Log.Info("serving", "on", ep.String())
	err = ServeEndpoint(ctx, server.New(sc), ep, o.Log)
	if ctx.Err() != nil {
		return nil
	}
	return err
}
