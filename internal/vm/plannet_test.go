package vm

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/store"
)

// namedBackend is a backend that only has a name, for planNet.
type namedBackend struct{ name string }

func (b namedBackend) Name() string                      { return b.name }
func (namedBackend) Capabilities() backend.Capabilities  { return backend.Capabilities{} }
func (namedBackend) Available(context.Context) error     { return nil }
func (namedBackend) Open(string) (backend.Handle, error) { return nil, backend.ErrUnsupported }
func (namedBackend) Start(context.Context, backend.Spec) (backend.Handle, error) {
	return nil, backend.ErrUnsupported
}

func TestPlanNet(t *testing.T) {
	tests := []struct {
		name, backend, network string
		publish                []string
		want                   *store.NetInfo
		err                    string
	}{
		{name: "docker default", backend: "docker", network: "default", want: &store.NetInfo{Network: "default"}},
		{name: "docker named with ports", backend: "docker", network: "lab", publish: []string{"8080:80", "0.0.0.0:53:53/udp"},
			want: &store.NetInfo{Network: "lab", Publish: []string{"127.0.0.1:8080:80/tcp", "0.0.0.0:53:53/udp"}}},
		{name: "docker none", backend: "docker", network: "none"},
		{name: "docker none with ports", backend: "docker", network: "none", publish: []string{"80:80"}, err: "-p needs a network"},
		{name: "docker user mode", backend: "docker", network: "user", err: "--network user is the QEMU backend's"},
		{name: "docker bad name", backend: "docker", network: "Lab_1", err: "invalid network name"},
		{name: "docker bad port", backend: "docker", network: "lab", publish: []string{"80"}, err: "want [IP:]HOSTPORT:GUESTPORT"},
		{name: "qemu user mode", backend: "qemu", network: "user", want: &store.NetInfo{Network: "user"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &store.Record{Name: "web"}
			err := planNet(rec, tt.network, tt.publish, namedBackend{tt.backend})
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(rec.Net, tt.want) {
				t.Fatalf("rec.Net %+v, %v; want %+v", rec.Net, err, tt.want)
			}
		})
	}
}
