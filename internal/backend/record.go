package backend

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mvm-dev/mvm/internal/store"
)

// RecordFile is where a backend keeps, inside the VM directory, what a fresh
// process needs to reopen the VM (Backend.Open).
const RecordFile = "backend.json"

// SaveRecord writes v (a struct with a "backend" field) atomically.
func SaveRecord(dir string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return store.WriteFileAtomic(filepath.Join(dir, RecordFile), append(b, '\n'), 0o600)
}

// LoadRecord reads the record into v and checks that it was written by the
// backend called name, so one backend never operates another's VM.
func LoadRecord(dir, name string, v any) error {
	b, err := os.ReadFile(filepath.Join(dir, RecordFile))
	if err != nil {
		return err
	}
	var head struct {
		Backend string `json:"backend"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return fmt.Errorf("decode %s: %w", RecordFile, err)
	}
	if head.Backend != name {
		return fmt.Errorf("%s names backend %q, not %q", RecordFile, head.Backend, name)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", RecordFile, err)
	}
	return nil
}
