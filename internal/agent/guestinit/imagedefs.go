package guestinit

import (
	"context"

	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/server"
)

// startImageDefs starts the image's services and health checks
// (/etc/mvm/services.d, /etc/mvm/health.d) on srv, or marks their stages
// done when the image defines none. A directory that cannot be read keeps
// its stage not-done with the reason.
func startImageDefs(ctx context.Context, c *Console, srv *server.Server, stages *server.Stages, servicesDir, healthDir string) {
	svcs, err := server.LoadServices(servicesDir)
	switch {
	case err != nil:
		c.Printf("services: %v", err)
		stages.Fail(proto.StageServices, err.Error())
	case len(svcs) == 0:
		stages.Mark(proto.StageServices, "none")
	default:
		c.Printf("starting %d services", len(svcs))
		srv.RunServices(ctx, svcs)
	}
	checks, err := server.LoadChecks(healthDir)
	switch {
	case err != nil:
		c.Printf("health checks: %v", err)
		stages.Fail(proto.StageHealth, err.Error())
	case len(checks) == 0:
		stages.Mark(proto.StageHealth, "none")
	default:
		c.Printf("running %d health checks", len(checks))
		srv.RunChecks(ctx, checks)
	}
}
