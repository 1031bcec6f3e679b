package image

import (
	"debug/elf"
	"fmt"
)

// checkStatic rejects binaries that need a dynamic loader: the minimal image
// has no libc.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; a static binary is needed", path)
		}
	}
	return nil
}

// elfMachine maps GOARCH to the ELF machine its binaries carry.
var elfMachine = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
}

// checkArch rejects a binary built for another architecture than goarch.
func checkArch(path, goarch string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable: %w", path, err)
	}
	defer f.Close()
	if want, ok := elfMachine[goarch]; ok && f.Machine != want {
		return fmt.Errorf("%s is built for %s, the image is %s", path, f.Machine, goarch)
	}
	return nil
}
