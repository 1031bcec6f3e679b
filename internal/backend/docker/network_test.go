package docker

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/backend"
	"github.com/mvm-dev/mvm/internal/guestcfg"
)

func TestApplyNetwork(t *testing.T) {
	tests := []struct {
		name     string
		att      *attachment
		pub      []backend.Publish
		mode     string
		aliases  []string
		exposed  []string
		bindings map[string][]portBinding
	}{
		{name: "none", mode: "none"},
		{name: "network", att: &attachment{Network: "mvm-lab-abc123", Aliases: []string{"web", "web.lab"}},
			mode: "mvm-lab-abc123", aliases: []string{"web", "web.lab"}},
		{name: "published", att: &attachment{Network: "mvm-lab-abc123", Aliases: []string{"web"}},
			pub: []backend.Publish{
				{Proto: "tcp", HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80},
				{Proto: "tcp", HostIP: "::1", HostPort: 8080, GuestPort: 80},
				{Proto: "udp", HostIP: "0.0.0.0", HostPort: 5353, GuestPort: 53},
			},
			mode: "mvm-lab-abc123", aliases: []string{"web"},
			exposed: []string{"53/udp", "80/tcp"},
			bindings: map[string][]portBinding{
				"80/tcp": {{HostIP: "127.0.0.1", HostPort: "8080"}, {HostIP: "::1", HostPort: "8080"}},
				"53/udp": {{HostIP: "0.0.0.0", HostPort: "5353"}},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := buildCreate(backend.Spec{Name: "web", Dir: "/d"}, "i", "/d/c", 0, 0)
			applyNetwork(&b, tt.att, tt.pub)
			if b.HostConfig.NetworkMode != tt.mode {
				t.Errorf("network mode %q, want %q", b.HostConfig.NetworkMode, tt.mode)
			}
			if tt.att == nil {
				if b.NetworkingConfig != nil || b.ExposedPorts != nil || b.HostConfig.PortBindings != nil {
					t.Errorf("mode none has endpoints or ports: %+v", b)
				}
				return
			}
			ep, ok := b.NetworkingConfig.EndpointsConfig[tt.mode]
			if !ok || !reflect.DeepEqual(ep.Aliases, tt.aliases) || len(b.NetworkingConfig.EndpointsConfig) != 1 {
				t.Errorf("endpoints %+v", b.NetworkingConfig.EndpointsConfig)
			}
			var exposed []string
			for k := range b.ExposedPorts {
				exposed = append(exposed, k)
			}
			slices.Sort(exposed)
			if !reflect.DeepEqual(exposed, tt.exposed) {
				t.Errorf("exposed %v, want %v", exposed, tt.exposed)
			}
			if !reflect.DeepEqual(b.HostConfig.PortBindings, tt.bindings) {
				t.Errorf("bindings %+v, want %+v", b.HostConfig.PortBindings, tt.bindings)
			}
		})
	}
	// The wire names are the Engine API's.
	b := buildCreate(backend.Spec{Name: "web", Dir: "/d"}, "i", "/d/c", 0, 0)
	applyNetwork(&b, tests[2].att, tests[2].pub)
	raw, _ := json.Marshal(b)
	for _, want := range []string{`"NetworkingConfig":{"EndpointsConfig":{"mvm-lab-abc123":{"Aliases":["web"]}}}`,
		`"ExposedPorts":{"53/udp":{},"80/tcp":{}}`, `"PortBindings":{"53/udp":[{"HostIp":"0.0.0.0","HostPort":"5353"}]`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("create body lacks %s:\n%s", want, raw)
		}
	}
}

func TestGuestConfigHasNoNetwork(t *testing.T) {
	in := &guestcfg.Config{Version: 1, Name: "a", Hostname: "a", Network: &guestcfg.Network{
		Interfaces: []guestcfg.Interface{{MAC: "02:6d:00:00:00:01", Address: "10.88.0.2/24"}}}}
	if got := guestConfig(backend.Spec{Name: "a", Guest: in}); got.Network != nil {
		t.Errorf("container config carries a network: %+v", got.Network)
	}
	if in.Network == nil {
		t.Error("caller's config modified")
	}
}

func TestResolveNetwork(t *testing.T) {
	e, f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1.40/networks/mvm-lab-abc123":
			io.WriteString(w, `{"Name":"mvm-lab-abc123","Internal":true,"Labels":{"mvm.managed":"1","mvm.network":"lab"}}`)
		case "/v1.40/networks/bridge":
			io.WriteString(w, `{"Name":"bridge","Labels":{}}`)
		default:
			apiErr(w, http.StatusNotFound, "network not found")
		}
	})
	nic := func(network string) []backend.NIC { return []backend.NIC{{ID: "net0", Network: network}} }
	tests := []struct {
		name string
		spec backend.Spec
		want *attachment
		err  string
	}{
		{name: "no nic", spec: backend.Spec{Name: "web"}},
		{name: "ports without nic", spec: backend.Spec{Name: "web", Publish: []backend.Publish{{Proto: "tcp", HostPort: 1, GuestPort: 1}}}, err: "need a network"},
		{name: "two nics", spec: backend.Spec{Name: "web", NICs: append(nic("a"), nic("b")...)}, err: "2 NICs"},
		{name: "tap", spec: backend.Spec{Name: "web", NICs: []backend.NIC{{ID: "net0", TAP: "mvmt0"}}}, err: "not on a Docker network"},
		{name: "ours", spec: backend.Spec{Name: "web", NICs: nic("mvm-lab-abc123")},
			want: &attachment{Network: "mvm-lab-abc123", Aliases: []string{"web", "web.lab"}, Internal: true}},
		{name: "foreign", spec: backend.Spec{Name: "web", NICs: nic("bridge")}, err: "not made by mvm"},
		{name: "missing", spec: backend.Spec{Name: "web", NICs: nic("mvm-gone-abc123")}, err: "does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.resolveNetwork(context.Background(), tt.spec)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	if n := len(f.requests()); n != 3 {
		t.Errorf("%d requests, want 3 (one per named network): %v", n, f.requests())
	}
}

func TestNetAddress(t *testing.T) {
	e, _ := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"Id":"abc","State":{"Status":"running","Running":true},"NetworkSettings":{"Networks":{"mvm-lab-abc123":{"IPAddress":"172.20.0.3","MacAddress":"02:42:ac:14:00:03"}}}}`)
	})
	tests := []struct {
		network, ip, mac string
		err              bool
	}{
		{network: "mvm-lab-abc123", ip: "172.20.0.3", mac: "02:42:ac:14:00:03"},
		{network: ""},
		{network: "mvm-other-abc123", err: true},
	}
	for _, tt := range tests {
		h := &Handle{rec: record{Container: "c", Network: tt.network}, eng: e}
		ip, mac, err := h.NetAddress(context.Background())
		if (err != nil) != tt.err || ip != tt.ip || mac != tt.mac {
			t.Errorf("network %q: %q %q %v", tt.network, ip, mac, err)
		}
	}
}
