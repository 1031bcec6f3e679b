package server_test

import (
	"context"
	"testing"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/agent/server"
)

// BenchmarkOp measures one whole operation in process: new connection,
// mutual TLS handshake (tls) or none (plain), hello/request, answer. Over
// serialmux the yamux session is warm and only the stream is new, as
// between mvmctl's supervisor and a guest.
func BenchmarkOp(b *testing.B) {
	for _, tr := range []transport{{"socketpair", socketpairTransport}, {"serialmux", serialmuxTransport}} {
		for _, withTLS := range []bool{false, true} {
			mode := "plain"
			if withTLS {
				mode = "tls"
			}
			b.Run(tr.name+"/"+mode+"/health", func(b *testing.B) { benchOp(b, tr, withTLS, false) })
			b.Run(tr.name+"/"+mode+"/exec-true", func(b *testing.B) { benchOp(b, tr, withTLS, true) })
		}
	}
}

func benchOp(b *testing.B, tr transport, withTLS, exec bool) {
	ln, dial := tr.setup(b)
	cfg := server.Config{}
	var opts []client.Option
	if withTLS {
		keys := newTestKeys(b)
		cfg.Wrap = keys.serverWrap
		opts = append(opts, client.WithWrap(keys.clientWrap))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = server.New(cfg).Serve(ctx, ln) }()
	c := client.New(dial, opts...)
	req := proto.ExecRequest{Argv: []string{"/bin/true"}}
	for b.Loop() {
		var err error
		if exec {
			_, err = c.Exec(ctx, req, nil, nil, nil)
		} else {
			_, err = c.Health(ctx)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}
