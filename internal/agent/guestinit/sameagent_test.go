package guestinit

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestSameAgent(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cp := filepath.Join(dir, "copy")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(dir, "text")
	os.WriteFile(text, []byte("#!/bin/sh\n"), 0o755)
	goTool, _ := exec.LookPath("go")  // another Go build
	notGo, _ := exec.LookPath("true") // ELF, no Go build ID

	tests := []struct {
		name  string
		path  string
		want  bool
		needs string // the program the case is made of, when PATH lacks it
	}{
		{"the same binary", cp, true, ""},
		{"another Go binary", goTool, false, "go on PATH"},
		{"a non-Go ELF", notGo, false, "true (coreutils) on PATH"},
		{"not ELF", text, false, ""},
		{"missing", filepath.Join(dir, "none"), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.path == "" {
				t.Skip("needs " + tt.needs)
			}
			if got := sameAgent(self, tt.path); got != tt.want {
				t.Fatalf("sameAgent(self, %s) = %v, want %v", tt.path, got, tt.want)
			}
		})
	}
	if id, err := goBuildID(self); err != nil || id == "" {
		t.Fatalf("own build ID: %q, %v", id, err)
	}
}
