package qemu

import (
	"runtime"
	"sync"
	"time"
)

var (
	tscOnce sync.Once
	tscKHz  int
)

// hostTSCKHz measures the host TSC rate. Under TCG the guest reads the host's
// TSC, and the kernel's PIT-based calibration fails now and then on a busy
// host; with no HPET on microvm the boot then hangs. tsc_early_khz avoids it.
func hostTSCKHz() int {
	tscOnce.Do(func() {
		if runtime.GOARCH != "amd64" {
			return
		}
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		t0, c0 := time.Now(), rdtsc()
		time.Sleep(20 * time.Millisecond)
		c1, t1 := rdtsc(), time.Now()
		us := t1.Sub(t0).Microseconds()
		if us <= 0 || c1 <= c0 {
			return
		}
		khz := int((c1 - c0) * 1000 / uint64(us))
		if khz > 100_000 && khz < 10_000_000 { // 100 MHz .. 10 GHz, else distrust
			tscKHz = khz
		}
	})
	return tscKHz
}
