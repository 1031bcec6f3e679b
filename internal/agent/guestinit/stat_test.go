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
		t.Skip("needs syscall.Stat_t")
	}
	return st.Dev
}
