package server

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func superblock(label string, magic uint16) []byte {
	b := make([]byte, 2048)
	binary.LittleEndian.PutUint16(b[1024+56:], magic)
	copy(b[1024+120:1024+136], label)
	return b
}

func TestExt4Label(t *testing.T) {
	for _, l := range []string{"", "mvmctr-0123abcd", "sixteen-chars-ok"} {
		got, err := ext4Label(bytes.NewReader(superblock(l, 0xEF53)))
		if err != nil || got != l {
			t.Errorf("label %q: got %q, %v", l, got, err)
		}
	}
	if _, err := ext4Label(bytes.NewReader(superblock("x", 0x1234))); err == nil {
		t.Error("bad magic accepted")
	}
	if _, err := ext4Label(bytes.NewReader(make([]byte, 100))); err == nil {
		t.Error("short device accepted")
	}
}

// FuzzExt4Label: the superblock of an attached disk is guest-visible bytes.
func FuzzExt4Label(f *testing.F) {
	f.Add(superblock("mvmctr-1", 0xEF53))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ext4Label(bytes.NewReader(b))
		if err == nil && len(l) > 16 {
			t.Fatalf("label %q longer than 16", l)
		}
	})
}
