package backend

import (
	"context"
	"strings"
	"testing"
)

func TestSelectArch(t *testing.T) {
	all := map[string]error{"qemu": nil, "docker": nil, "firecracker": nil}
	tests := []struct {
		name       string
		h          host
		preferred  string
		goarch     string
		wantChosen string
		wantMode   string
		wantErr    string
		wantReason map[string]string // candidate -> part of its reason
	}{
		{
			name: "host arch keeps the usual order", h: host{goos: "linux", kvm: true, firecracker: true, backends: all},
			goarch: "amd64", wantChosen: "firecracker", wantMode: "kvm",
		},
		{
			name: "foreign arch: qemu under TCG even with KVM", h: host{goos: "linux", kvm: true, firecracker: true, backends: all},
			goarch: "arm64", wantChosen: "qemu", wantMode: "tcg",
			wantReason: map[string]string{"docker": "cannot run arm64 guests", "firecracker": "cannot run arm64 guests", "qemu": "emulated (TCG)"},
		},
		{
			name: "foreign arch, docker requested", h: host{goos: "linux", backends: all},
			preferred: "docker", goarch: "arm64", wantErr: "backend docker cannot run arm64 guests here",
		},
		{
			name: "foreign arch, qemu requested", h: host{goos: "linux", kvm: true, backends: all},
			preferred: "qemu", goarch: "arm64", wantChosen: "qemu", wantMode: "tcg",
		},
		{
			name: "foreign arch, no qemu", h: host{goos: "linux", backends: map[string]error{"docker": nil}},
			goarch: "arm64", wantErr: "no backend on this host runs arm64 guests",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.h.probes()
			p.GOARCH = "amd64"
			b, d, err := p.SelectArch(context.Background(), tt.preferred, tt.goarch)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.Name() != tt.wantChosen || d.Chosen != tt.wantChosen || d.Mode != tt.wantMode {
				t.Fatalf("chose %s (%s), decision %+v; want %s (%s)", b.Name(), d.Mode, d, tt.wantChosen, tt.wantMode)
			}
			for _, c := range d.Candidates {
				if want, ok := tt.wantReason[c.Backend]; ok && !strings.Contains(c.Reason, want) {
					t.Errorf("%s: reason %q, want %q", c.Backend, c.Reason, want)
				}
			}
		})
	}
}
