package kvmprobe

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl numbers from <linux/kvm.h> (generic _IO/_IOW encoding, same on amd64 and arm64).
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmGetVCPUMmapSize     = 0xAE04
	kvmCreateVCPU          = 0xAE41
	kvmSetUserMemoryRegion = 0x4020AE46
	kvmRun                 = 0xAE80

	kvmAPIVersion = 12
)

// kvm_run exit reasons and the offsets of the fields we read.
const (
	exitIO            = 2
	exitHLT           = 5
	exitShutdown      = 8
	exitFailEntry     = 9
	exitInternalError = 17

	runExitReason = 8
	runIO         = 32 // union: direction u8, size u8, port u16, count u32, data_offset u64
)

type memoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

func ioctl(fd int, req, arg uintptr) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return r, errno
	}
	return r, nil
}

type result struct {
	ok     bool
	reason string
}

func probe(ctx context.Context) (bool, string) {
	if _, err := os.Stat(Device); err != nil {
		return false, fmt.Sprintf("%s not present (load kvm_intel/kvm_amd, or enable virtualization)", Device)
	}
	if why := pvmOnly(sysModule); why != "" {
		return false, why
	}
	ch := make(chan result, 1)
	// KVM_RUN can block forever on a broken host. The goroutine is left behind
	// in that case (it owns its fds); the answer is cached, so it happens once.
	go func() {
		ok, why := runGuest()
		ch <- result{ok, why}
	}()
	select {
	case r := <-ch:
		return r.ok, r.reason
	case <-ctx.Done():
		return false, fmt.Sprintf("%s: test guest did not exit within %v (KVM_RUN hangs; nested or broken virtualization)", Device, Timeout)
	}
}

// sysModule is where loaded kernel modules appear; a variable for tests.
var sysModule = "/sys/module"

// pvmOnly explains why a host whose only KVM vendor module is kvm_pvm cannot
// run our guests. PVM runs the vCPU as a user process and accepts only
// PVM-enabled guest kernels, yet it passes a real-mode smoke test (observed:
// the probe guest exits cleanly while QEMU fails to set MSR 0x10a for a stock
// kernel), so the test program alone would say "usable".
func pvmOnly(root string) string {
	has := func(m string) bool {
		_, err := os.Stat(root + "/" + m)
		return err == nil
	}
	if has("kvm_pvm") && !has("kvm_intel") && !has("kvm_amd") {
		return fmt.Sprintf("%s is provided by kvm_pvm (Pagetable-based Virtual Machine): it runs only PVM-enabled guest kernels, not stock ones", Device)
	}
	return ""
}

func runGuest() (bool, string) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	kvm, err := unix.Open(Device, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EACCES) {
			return false, fmt.Sprintf("open %s: permission denied (add your user to the kvm group)", Device)
		}
		return false, fmt.Sprintf("open %s: %v", Device, err)
	}
	defer unix.Close(kvm)
	v, err := ioctl(kvm, kvmGetAPIVersion, 0)
	if err != nil {
		return false, fmt.Sprintf("KVM_GET_API_VERSION: %v", err)
	}
	if v != kvmAPIVersion {
		return false, fmt.Sprintf("KVM API version %d, want %d", v, kvmAPIVersion)
	}
	vmfd, err := ioctl(kvm, kvmCreateVM, 0)
	if err != nil {
		return false, fmt.Sprintf("KVM_CREATE_VM: %v", err)
	}
	vm := int(vmfd)
	defer unix.Close(vm)
	return runArch(kvm, vm)
}

// vcpuSetup holds what every arch needs: guest memory and a mapped kvm_run.
type vcpuSetup struct {
	vcpu int
	mem  []byte
	run  []byte
}

func (s *vcpuSetup) close() {
	if s.run != nil {
		unix.Munmap(s.run)
	}
	if s.mem != nil {
		unix.Munmap(s.mem)
	}
	if s.vcpu > 0 {
		unix.Close(s.vcpu)
	}
}

// setup maps one page of guest memory at guestAddr holding code, and creates vCPU 0.
func setup(kvm, vm int, guestAddr uint64, code []byte) (*vcpuSetup, string) {
	s := &vcpuSetup{}
	mem, err := unix.Mmap(-1, 0, 0x1000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return s, fmt.Sprintf("mmap guest memory: %v", err)
	}
	s.mem = mem
	copy(mem, code)
	region := memoryRegion{GuestPhysAddr: guestAddr, MemorySize: 0x1000, UserspaceAddr: uint64(uintptr(unsafe.Pointer(&mem[0])))}
	if _, err := ioctl(vm, kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&region))); err != nil {
		return s, fmt.Sprintf("KVM_SET_USER_MEMORY_REGION: %v", err)
	}
	fd, err := ioctl(vm, kvmCreateVCPU, 0)
	if err != nil {
		return s, fmt.Sprintf("KVM_CREATE_VCPU: %v", err)
	}
	s.vcpu = int(fd)
	size, err := ioctl(kvm, kvmGetVCPUMmapSize, 0)
	if err != nil {
		return s, fmt.Sprintf("KVM_GET_VCPU_MMAP_SIZE: %v", err)
	}
	run, err := unix.Mmap(s.vcpu, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return s, fmt.Sprintf("mmap kvm_run: %v", err)
	}
	s.run = run
	return s, ""
}

func exitName(r uint32) string {
	switch r {
	case exitHLT:
		return "HLT"
	case exitShutdown:
		return "SHUTDOWN (triple fault)"
	case exitFailEntry:
		return "FAIL_ENTRY"
	case exitInternalError:
		return "INTERNAL_ERROR"
	}
	return fmt.Sprintf("exit reason %d", r)
}
