package vm

import (
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/config"
)

// TestPrecedence covers every level of flag > VM config > image recipe >
// user config > built-in default for each resource.
func TestPrecedence(t *testing.T) {
	full := &VMConfig{Image: "vc-img", Backend: "vc-be", CPUs: 3, memMiB: 300}
	user := &config.Config{DefaultCPUs: 4, DefaultMemoryMiB: 400, DefaultImage: "user-img", DefaultBackend: "user-be"}
	flags := UpOptions{Image: "flag-img", Backend: "flag-be", CPUs: 2, MemoryMiB: 200}
	const rCPUs, rMem = 5, 500
	tests := []struct {
		name        string
		o           UpOptions
		vc          *VMConfig
		recipeCPUs  int
		recipeMem   int
		user        *config.Config
		wantCPUs    choice
		wantMem     choice
		wantImage   strChoice
		wantBackend strChoice
	}{
		{"flags win over everything", flags, full, rCPUs, rMem, user,
			choice{2, SourceFlag}, choice{200, SourceFlag}, strChoice{"flag-img", SourceFlag}, strChoice{"flag-be", SourceFlag}},
		{"vm config beats recipe and user", UpOptions{}, full, rCPUs, rMem, user,
			choice{3, SourceVMConfig}, choice{300, SourceVMConfig}, strChoice{"vc-img", SourceVMConfig}, strChoice{"vc-be", SourceVMConfig}},
		{"recipe beats user config", UpOptions{}, nil, rCPUs, rMem, user,
			choice{5, SourceImage}, choice{500, SourceImage}, strChoice{"user-img", SourceUserConfig}, strChoice{"user-be", SourceUserConfig}},
		{"user config beats default", UpOptions{}, &VMConfig{}, 0, 0, user,
			choice{4, SourceUserConfig}, choice{400, SourceUserConfig}, strChoice{"user-img", SourceUserConfig}, strChoice{"user-be", SourceUserConfig}},
		{"built-in defaults last", UpOptions{}, nil, 0, 0, &config.Config{},
			choice{config.BuiltinCPUs, SourceDefault}, choice{config.BuiltinMemoryMiB, SourceDefault},
			strChoice{config.BuiltinImage, SourceDefault}, strChoice{"", SourceDefault}},
		{"levels mix per resource", UpOptions{CPUs: 2}, &VMConfig{memMiB: 300}, 0, 0, &config.Config{DefaultImage: "user-img"},
			choice{2, SourceFlag}, choice{300, SourceVMConfig}, strChoice{"user-img", SourceUserConfig}, strChoice{"", SourceDefault}},
		{"user config defaults never pre-fill flags", UpOptions{}, &VMConfig{CPUs: 3}, rCPUs, rMem, user,
			choice{3, SourceVMConfig}, choice{500, SourceImage}, strChoice{"user-img", SourceUserConfig}, strChoice{"user-be", SourceUserConfig}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cpus, mem := resolveShape(tt.o, tt.vc, tt.recipeCPUs, tt.recipeMem, tt.user)
			if cpus != tt.wantCPUs || mem != tt.wantMem {
				t.Errorf("shape = cpus %+v mem %+v, want %+v %+v", cpus, mem, tt.wantCPUs, tt.wantMem)
			}
			if img := resolveImage(tt.o, tt.vc, tt.user); img != tt.wantImage {
				t.Errorf("image = %+v, want %+v", img, tt.wantImage)
			}
			if be := resolveBackendName(tt.o, tt.vc, tt.user); be != tt.wantBackend {
				t.Errorf("backend = %+v, want %+v", be, tt.wantBackend)
			}
		})
	}
}

func TestParseVMConfig(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string // substring; "" = ok
		cpus    int
		mem     int
	}{
		{"empty", ``, "", 0, 0},
		{"size string", "cpus = 2\nmemory = \"1G\"\n", "", 2, 1024},
		{"plain MiB", "memory_mib = 384\nimage = \"minimal\"\nname = \"web\"\nbackend = \"qemu\"\n", "", 0, 384},
		{"unknown key with line", "cpus = 1\nmemroy = \"1G\"\n", "vm.toml:2: unknown key \"memroy\"", 0, 0},
		{"wrong type with key", "cpus = \"two\"\n", "vm.toml:1: key \"cpus\"", 0, 0},
		{"bad size", "\nmemory = \"lots\"\n", "vm.toml:2: key \"memory\"", 0, 0},
		{"both memory keys", "memory = \"1G\"\nmemory_mib = 512\n", "either memory or memory_mib", 0, 0},
		{"too small", "memory_mib = 10\n", "vm.toml:1: key \"memory_mib\"", 0, 0},
		{"cpus range", "cpus = 999\n", "vm.toml:1: key \"cpus\"", 0, 0},
		{"bad name", "name = \"Web_1\"\n", "vm.toml:1: key \"name\"", 0, 0},
		{"syntax", "cpus = \n", "vm.toml:1", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseVMConfig("vm.toml", []byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.CPUs != tt.cpus || c.MemMiB() != tt.mem {
				t.Fatalf("got cpus %d mem %d", c.CPUs, c.MemMiB())
			}
		})
	}
}

func FuzzParseVMConfig(f *testing.F) {
	f.Add([]byte("cpus = 2\nmemory = \"1G\"\n"))
	f.Add([]byte("memory_mib = 64\nname = \"a\"\n"))
	f.Add([]byte("[x]\ny=1"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := ParseVMConfig("f.toml", in)
		if err != nil {
			return
		}
		if c.CPUs < 0 || c.CPUs > 255 || (c.MemMiB() != 0 && c.MemMiB() < 64) {
			t.Fatalf("accepted out-of-range config %+v", c)
		}
	})
}
