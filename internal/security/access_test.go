package security

import (
	"errors"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/network"
	"github.com/mvm-dev/mvm/internal/store"
)

func TestConsole(t *testing.T) {
	tests := []struct {
		name string
		vms  []store.Record
		want []string // in the one Info check; nil: no check
	}{
		{"no VMs", nil, nil},
		{"allowed and refused", []store.Record{
			{Name: "dev", Image: "debian", Boot: &store.Boot{Console: true}},
			{Name: "web", Image: "minimal", Boot: &store.Boot{}},
		}, []string{"allowed by the image ([access] console = true) on dev (image debian)", "refused by the agent on web (image minimal)"}},
		{"not booted yet", []store.Record{{Name: "new", Image: "minimal"}}, []string{"not booted yet: new (image minimal)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Env{}
			for i := range tt.vms {
				e.VMs = append(e.VMs, &tt.vms[i])
			}
			got := checkConsole(e)
			if tt.want == nil {
				if len(got) != 0 {
					t.Fatalf("%+v", got)
				}
				return
			}
			wantOne(t, got, Info, tt.want...)
		})
	}
}

func TestNetworks(t *testing.T) {
	att := func(vm, tap string) *network.Attachment {
		return &network.Attachment{VM: vm, IP: "10.88.0.2", TAP: tap}
	}
	tests := []struct {
		name   string
		net    network.Network
		status Status
		want   []string
	}{
		{"open bridged network warns", network.Network{Name: "default", Mode: network.ModeBridge,
			Attached: map[string]*network.Attachment{"web": att("web", "mvmt1")}},
			Warn, []string{"bridged, egress open", "VMs web"}},
		{"open with deny rules is still open", network.Network{Name: "lab", Mode: network.ModeBridge,
			Egress: &network.Egress{Preset: network.EgressOpen, Deny: []string{"10.0.0.0/8"}}}, Warn, []string{"egress open -1 denied", "no VMs"}},
		{"a policy passes", network.Network{Name: "lab", Mode: network.ModeBridge,
			Egress: &network.Egress{Preset: network.EgressRegistries, Allow: []string{"api.example.com"}}}, Pass, []string{"egress registries +1 allowed", "enforced"}},
		{"internal passes", network.Network{Name: "priv", Mode: network.ModeBridge, Internal: true}, Pass, []string{"internal (no route out"}},
		{"user mode cannot enforce", network.Network{Name: "u", Mode: network.ModeUser}, Info, []string{"cannot enforce an egress policy"}},
		{"docker VMs use Docker's NAT", network.Network{Name: "default", Mode: network.ModeBridge,
			Attached: map[string]*network.Attachment{"c": att("c", ""), "q": att("q", "mvmt2")}},
			Warn, []string{"VMs c, q", "docker-backend VMs c use Docker's own NAT"}},
		{"unknown mode", network.Network{Name: "x", Mode: "weird"}, Warn, []string{`unknown mode "weird"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.net
			c := wantOne(t, checkNetworks(&Env{Networks: []*network.Network{&n}}), tt.status, tt.want...)
			if c.Check != "network: "+n.Name {
				t.Errorf("check %q", c.Check)
			}
			if c.Status == Warn && n.Mode == network.ModeBridge && !strings.Contains(c.Fix, "mvmctl network update "+n.Name+" --egress") {
				t.Errorf("fix %q", c.Fix)
			}
		})
	}
}

func TestNetworksWithoutRecords(t *testing.T) {
	e := &Env{}
	wantOne(t, checkNetworks(e), Info, "no networks yet")
	e.VMs = []*store.Record{{Name: "web", Net: &store.NetInfo{Network: network.ModeUser, Mode: network.ModeUser}}}
	wantOne(t, checkNetworks(e), Info, "user-mode networking (the VMM's own NAT) for web", "cannot enforce")
	e.VMs = nil
	e.NetworksErr = errors.New("network record lab.json: bad JSON")
	wantOne(t, checkNetworks(e), Warn, "lab.json: bad JSON")
}

func TestDocker(t *testing.T) {
	tests := []struct {
		name   string
		vms    []store.Record
		host   DockerHost
		status Status
		want   []string
	}{
		{"not available", nil, DockerHost{Reason: "docker backend: no daemon"}, Info, []string{"not available (docker backend: no daemon)"}},
		{"available, unused", []store.Record{{Name: "old", State: "stopped", Backend: "docker"}},
			DockerHost{Available: true, SecurityOptions: []string{"name=seccomp,profile=default"}},
			Info, []string{"no VM runs on it (stopped: old)", "share the host kernel", "seccomp profile default", "no user namespace"}},
		{"a running container warns", []store.Record{
			{Name: "c1", State: "running", Backend: "docker"},
			{Name: "q", State: "running", Backend: "qemu"},
		}, DockerHost{Available: true, SecurityOptions: []string{"name=seccomp,profile=builtin", "name=userns"}},
			Warn, []string{"running on it: c1", "share the host kernel", "user namespaces remapped", "still enforced", "pinned guest key", "console policy"}},
		{"paused counts as running", []store.Record{{Name: "c1", State: "paused", Backend: "docker"}}, DockerHost{}, Warn, []string{"c1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Env{Host: Host{Docker: tt.host}}
			for i := range tt.vms {
				e.VMs = append(e.VMs, &tt.vms[i])
			}
			c := wantOne(t, checkDocker(e), tt.status, tt.want...)
			if strings.Contains(c.Detail, "q ") {
				t.Errorf("a QEMU VM is listed as a container: %s", c.Detail)
			}
		})
	}
}

func TestDockerFacts(t *testing.T) {
	tests := []struct {
		opts []string
		want string
	}{
		{nil, ""},
		{[]string{"name=seccomp,profile=default"}, "seccomp profile default, no user namespace (root in a container is uid 0 of the host kernel)"},
		{[]string{"name=apparmor", "name=seccomp,profile=builtin", "name=rootless", "name=cgroupns"}, "apparmor, seccomp profile builtin, rootless"},
		{[]string{"name=userns"}, "user namespaces remapped"},
	}
	for _, tt := range tests {
		if got := dockerFacts(tt.opts); got != tt.want {
			t.Errorf("dockerFacts(%q) = %q, want %q", tt.opts, got, tt.want)
		}
	}
}

func TestFirecracker(t *testing.T) {
	wantOne(t, checkFirecracker(&Env{}), Info, "not available (no Firecracker backend on this host)")
	wantOne(t, checkFirecracker(&Env{Host: Host{Firecracker: true}}), Info, "no Firecracker VM runs")
}
