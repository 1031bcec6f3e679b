package guestinit

import (
	"os"
	"syscall"
	"testing"
)

func devOf(t *testing.T, fi os.FileInfo) uint64 {
	t.Helper()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		// Linux always has it: its absence is a failure, not a reason to skip.
		t.Fatalf("%s: no syscall.Stat_t (%T)", fi.Name(), fi.Sys())
	}
	return st.Dev
}
