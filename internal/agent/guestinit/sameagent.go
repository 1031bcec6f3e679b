package guestinit

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
)

// goBuildID returns the Go build ID in the ELF note .note.go.buildid of
// path. It reads only the headers and the note, not the whole binary.
func goBuildID(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := f.Section(".note.go.buildid")
	if s == nil {
		return "", errors.New("no Go build ID note")
	}
	if s.Size > 4096 {
		return "", fmt.Errorf("the Go build ID note is %d bytes", s.Size)
	}
	b, err := s.Data()
	if err != nil {
		return "", err
	}
	// namesz, descsz, type, then "Go\0\0" and the ID.
	if len(b) < 16 {
		return "", errors.New("short Go build ID note")
	}
	bo := f.ByteOrder
	namesz, descsz, typ := bo.Uint32(b), bo.Uint32(b[4:]), bo.Uint32(b[8:])
	if namesz != 4 || typ != 4 || !bytes.Equal(b[12:16], []byte("Go\x00\x00")) || uint64(descsz) > uint64(len(b)-16) {
		return "", errors.New("malformed Go build ID note")
	}
	id := b[16 : 16+descsz]
	if len(id) == 0 {
		return "", errors.New("empty Go build ID")
	}
	return string(id), nil
}

// sameAgent reports whether the binary at path is the one running (the
// initramfs's /init): same Go build ID, which the go tool derives from
// every input of the build. Then the root's agent need not be exec'd:
// under TCG an exec from the root disk (page faults through virtio-blk, a
// second Go runtime start) costs over a second of a cold boot.
func sameAgent(self, path string) bool {
	a, err := goBuildID(self)
	if err != nil {
		return false
	}
	b, err := goBuildID(path)
	return err == nil && a == b
}
