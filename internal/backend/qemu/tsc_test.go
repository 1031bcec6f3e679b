package qemu

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRememberedTSC(t *testing.T) {
	file := filepath.Join(t.TempDir(), "probes", "tsc")
	rememberTSC(file, "boot-a", 2445294)
	tests := []struct {
		name    string
		content string // "" keeps what rememberTSC wrote
		bootID  string
		want    int
		ok      bool
	}{
		{"same boot", "", "boot-a", 2445294, true},
		{"another boot", "", "boot-b", 0, false},
		{"no boot id", "", "", 0, false},
		{"garbage", "boot-a lots", "boot-a", 0, false},
		{"implausible", "boot-a 12", "boot-a", 0, false},
		{"no value", "boot-a", "boot-a", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.content != "" {
				if err := os.WriteFile(file, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
				defer rememberTSC(file, "boot-a", 2445294)
			}
			got, ok := rememberedTSC(file, tt.bootID)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("got %d, %v; want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	if _, ok := rememberedTSC(filepath.Join(t.TempDir(), "none"), "boot-a"); ok {
		t.Fatal("a missing file remembered something")
	}
}
