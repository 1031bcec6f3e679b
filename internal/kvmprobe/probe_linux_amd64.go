package kvmprobe

import (
	"encoding/binary"
	"fmt"
	"unsafe"
)

const (
	kvmGetRegs  = 0x8090AE81
	kvmSetRegs  = 0x4090AE82
	kvmGetSregs = 0x8138AE83
	kvmSetSregs = 0x4138AE84
)

// Real-mode test program at guest address 0x1000:
//
//	mov al, 0x42 ; out 0x10, al ; hlt
var testCode = []byte{0xb0, 0x42, 0xe6, 0x10, 0xf4}

const (
	codeAddr = 0x1000
	testPort = 0x10
	testByte = 0x42
)

// kvm_regs is 18 u64: rax..r15 (16), rip, rflags.
type regs [18]uint64

// kvm_sregs is 312 bytes; cs is the first kvm_segment (base u64 at 0, selector u16 at 12).
type sregs [312]byte

func runArch(kvm, vm int) (bool, string) {
	s, why := setup(kvm, vm, codeAddr, testCode)
	defer s.close()
	if why != "" {
		return false, why
	}
	var sr sregs
	if _, err := ioctl(s.vcpu, kvmGetSregs, uintptr(unsafe.Pointer(&sr))); err != nil {
		return false, fmt.Sprintf("KVM_GET_SREGS: %v", err)
	}
	binary.LittleEndian.PutUint64(sr[0:8], 0)   // cs.base
	binary.LittleEndian.PutUint16(sr[12:14], 0) // cs.selector
	if _, err := ioctl(s.vcpu, kvmSetSregs, uintptr(unsafe.Pointer(&sr))); err != nil {
		return false, fmt.Sprintf("KVM_SET_SREGS: %v", err)
	}
	var r regs
	r[16] = codeAddr // rip
	r[17] = 0x2      // rflags: reserved bit 1 must be set
	if _, err := ioctl(s.vcpu, kvmSetRegs, uintptr(unsafe.Pointer(&r))); err != nil {
		return false, fmt.Sprintf("KVM_SET_REGS: %v", err)
	}
	if _, err := ioctl(s.vcpu, kvmRun, 0); err != nil {
		return false, fmt.Sprintf("KVM_RUN: %v", err)
	}
	reason := binary.LittleEndian.Uint32(s.run[runExitReason:])
	if reason != exitIO {
		return false, fmt.Sprintf("test guest stopped with %s instead of an I/O exit", exitName(reason))
	}
	dir, size := s.run[runIO], s.run[runIO+1]
	port := binary.LittleEndian.Uint16(s.run[runIO+2:])
	off := binary.LittleEndian.Uint64(s.run[runIO+8:])
	if dir != 1 || size != 1 || port != testPort || off >= uint64(len(s.run)) {
		return false, fmt.Sprintf("test guest made an unexpected I/O exit (dir %d size %d port %#x)", dir, size, port)
	}
	if got := s.run[off]; got != testByte {
		return false, fmt.Sprintf("test guest wrote %#x, want %#x", got, testByte)
	}
	return true, fmt.Sprintf("%s: test guest ran (real-mode I/O exit on port %#x with %#x)", Device, testPort, testByte)
}
