package server

import (
	"context"
	"encoding/json"
	"os"

	"golang.org/x/sys/unix"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

func (s *Server) health(ctx context.Context, w *wire, args json.RawMessage) error {
	var req proto.HealthRequest
	if err := decodeArgs(args, &req); err != nil {
		return w.fail(proto.Errorf(proto.CodeBadRequest, "health args: %v", err))
	}
	if req.RunChecks {
		s.runChecksNow(ctx)
	}
	res := proto.HealthResult{
		Ready:    s.cfg.Stages.Ready(),
		Stages:   s.cfg.Stages.Snapshot(),
		Checks:   s.checks.snapshot(),
		Services: s.services.snapshot(),
	}
	res.Hostname, _ = os.Hostname()
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		res.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) == nil {
		res.UptimeMS = ts.Nano() / 1e6
	}
	return respond(w, res)
}

// respond sends TResponse with result as its JSON result.
func respond(w *wire, result any) error {
	var raw json.RawMessage
	if result != nil {
		b, err := json.Marshal(result)
		if err != nil {
			return w.fail(proto.Errorf(proto.CodeInternal, "encode result: %v", err))
		}
		raw = b
	}
	return w.sendJSON(proto.TResponse, proto.Response{Result: raw})
}
