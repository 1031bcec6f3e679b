package qemu

import (
	"bytes"
	"fmt"
	"os"
)

// cpioFile is one entry of a test initramfs.
type cpioFile struct {
	Name         string
	Mode         uint32 // including the file type bits
	Data         []byte
	Major, Minor uint32 // device number of character devices
}

// newcArchive writes entries as a newc ("070701") cpio archive, the format
// the kernel unpacks as an initramfs.
func newcArchive(entries []cpioFile) []byte {
	var b bytes.Buffer
	pad := func() {
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	write := func(ino int, e cpioFile) {
		name := e.Name + "\x00"
		fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s",
			ino, e.Mode, 0, 0, 1, 0, len(e.Data), 0, 0, e.Major, e.Minor, len(name), 0, name)
		pad()
		b.Write(e.Data)
		pad()
	}
	for i, e := range entries {
		write(i+1, e)
	}
	write(0, cpioFile{Name: "TRAILER!!!"})
	for b.Len()%512 != 0 {
		b.WriteByte(0)
	}
	return b.Bytes()
}

func fileEntry(name, src string, mode uint32) (cpioFile, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return cpioFile{}, err
	}
	return cpioFile{Name: name, Mode: 0o100000 | mode, Data: data}, nil
}
