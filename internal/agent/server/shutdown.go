package server

import (
	"encoding/json"

	"github.com/mvm-dev/mvm/internal/agent/proto"
)

// shutdown answers first, closes the connection so the answer is flushed
// towards the host, then hands over to the init's power-off path.
func (s *Server) shutdown(w *wire, args json.RawMessage) error {
	var req proto.ShutdownRequest
	if err := decodeArgs(args, &req); err != nil {
		return w.fail(proto.Errorf(proto.CodeBadRequest, "shutdown args: %v", err))
	}
	if s.cfg.Shutdown == nil {
		return w.fail(proto.Errorf(proto.CodeUnavailable, "this agent cannot shut its system down"))
	}
	if err := respond(w, nil); err != nil {
		return err
	}
	_ = w.conn.Close()
	s.log.Info("shutdown requested by host", "reboot", req.Reboot)
	// Not inline: the callback may cancel Serve, which waits for this handler.
	go s.cfg.Shutdown(req.Reboot)
	return nil
}
