package image

import (
	"os"
	"path/filepath"
	"testing"
)

// The placeholder keeps the config drive's size (the restored machine must
// match the saved one) and costs no disk space.
func TestWriteConfigPlaceholder(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.img")
	if err := os.WriteFile(p, []byte("old content"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteConfigPlaceholder(p); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != configDriveSize {
		t.Fatalf("size %d, want %d", st.Size(), configDriveSize)
	}
	b, _ := os.ReadFile(p)
	for _, c := range b {
		if c != 0 {
			t.Fatal("placeholder is not empty")
		}
	}
}
