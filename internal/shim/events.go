//go:build linux

package shim

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// publishTimeout bounds one event's delivery to containerd.
const publishTimeout = 5 * time.Second

// publisher forwards task events to containerd's ttrpc events service,
// as containerd's own shims do (TTRPC_ADDRESS).
type publisher struct {
	addr, ns string
	log      *slog.Logger
	mu       sync.Mutex
	client   *ttrpc.Client
}

func newPublisher(addr, ns string, log *slog.Logger) *publisher {
	return &publisher{addr: strings.TrimPrefix(addr, "unix://"), ns: ns, log: log}
}

// publish sends ev under topic; a failure is logged, not returned: an
// event lost must not fail the task operation that caused it.
func (p *publisher) publish(topic string, ev proto.Message) {
	if p == nil || p.addr == "" {
		return
	}
	if err := p.send(topic, ev); err != nil {
		p.log.Warn("publish event", "topic", topic, "err", err)
	}
}

func (p *publisher) send(topic string, ev proto.Message) error {
	b, err := proto.Marshal(ev)
	if err != nil {
		return err
	}
	// The type URL is the bare message name: containerd resolves it in its
	// type registry, where events are registered under that name.
	any := &anypb.Any{TypeUrl: string(proto.MessageName(ev)), Value: b}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == nil {
		d := net.Dialer{Timeout: publishTimeout}
		conn, err := d.Dial("unix", p.addr)
		if err != nil {
			return fmt.Errorf("dial %s: %w", p.addr, err)
		}
		p.client = ttrpc.NewClient(conn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	ctx = ttrpc.WithMetadata(ctx, ttrpc.MD{"containerd-namespace-ttrpc": []string{p.ns}})
	_, err = eventsapi.NewEventsClient(p.client).Forward(ctx, &eventsapi.ForwardRequest{Envelope: &types.Envelope{
		Timestamp: timestamppb.Now(), Namespace: p.ns, Topic: topic, Event: any,
	}})
	if err != nil {
		p.client.Close()
		p.client = nil
	}
	return err
}

func (p *publisher) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		p.client.Close()
		p.client = nil
	}
}
