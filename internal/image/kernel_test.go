package image

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVersionLess(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64", true},
		{"6.1.0-56-cloud-amd64", "6.1.0-9-cloud-amd64", false},
		{"5.10.0-30-cloud-amd64", "6.1.0-1-cloud-amd64", true},
		{"6.1.0-56-cloud-amd64", "6.1.0-56-cloud-amd64", false},
		{"6.1", "6.1.1", true},
		{"6.01", "6.1", false},
	}
	for _, tt := range tests {
		if got := versionLess(tt.a, tt.b); got != tt.want {
			t.Errorf("versionLess(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestDebArch(t *testing.T) {
	for in, want := range map[string]string{"amd64": "amd64", "arm64": "arm64"} {
		if got, err := debArch(in); err != nil || got != want {
			t.Errorf("debArch(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := debArch("mips"); err == nil {
		t.Error("debArch(mips) succeeded")
	}
}

func TestFindKernel(t *testing.T) {
	tests := []struct {
		name    string
		images  []string // releases with a /boot/vmlinuz-<r>
		modules []string // releases with modules.dep
		debarch string
		want    string
		wantErr string
	}{
		{
			name:    "newest cloud kernel with modules",
			images:  []string{"6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64", "6.1.0-60-cloud-amd64", "6.1.0-70-amd64"},
			modules: []string{"6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64", "6.1.0-70-amd64"},
			debarch: "amd64",
			want:    "6.1.0-56-cloud-amd64",
		},
		{
			name:    "falls back to any kernel with modules",
			images:  []string{"6.1.0-70-amd64", "6.1.0-60-cloud-arm64"},
			modules: []string{"6.1.0-70-amd64"},
			debarch: "arm64",
			want:    "6.1.0-70-amd64",
		},
		{
			name:    "none",
			images:  []string{"6.1.0-70-cloud-amd64"},
			debarch: "amd64",
			wantErr: "apt-get install linux-image-cloud-amd64",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			oldBoot, oldMods := bootDir, modulesRoot
			bootDir, modulesRoot = filepath.Join(root, "boot"), filepath.Join(root, "lib/modules")
			t.Cleanup(func() { bootDir, modulesRoot = oldBoot, oldMods })
			os.MkdirAll(bootDir, 0o755)
			for _, r := range tt.images {
				os.WriteFile(filepath.Join(bootDir, "vmlinuz-"+r), []byte("k"), 0o644)
			}
			for _, r := range tt.modules {
				os.MkdirAll(filepath.Join(modulesRoot, r), 0o755)
				os.WriteFile(filepath.Join(modulesRoot, r, "modules.dep"), nil, 0o644)
			}
			k, err := findKernel(tt.debarch)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Release != tt.want || k.Image != filepath.Join(bootDir, "vmlinuz-"+tt.want) ||
				k.ModulesDir != filepath.Join(modulesRoot, tt.want) {
				t.Errorf("got %+v, want release %s", k, tt.want)
			}
		})
	}
}
