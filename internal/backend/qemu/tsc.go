package qemu

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mvm-dev/mvm/internal/paths"
)

var (
	tscOnce sync.Once
	tscKHz  int
)

// bootIDFile changes with every host boot; the TSC rate does not within one.
var bootIDFile = "/proc/sys/kernel/random/boot_id"

// hostTSCKHz measures the host TSC rate. Under TCG the guest reads the host's
// TSC, and the kernel's PIT-based calibration fails now and then on a busy
// host; with no HPET on microvm the boot then hangs. tsc_early_khz avoids it.
// The measurement sleeps 20 ms, so it is remembered for the host's boot
// (<cache>/probes/tsc): each `up`, a process of its own, skips the sleep.
func hostTSCKHz() int {
	tscOnce.Do(func() {
		if runtime.GOARCH != "amd64" {
			return
		}
		bootID := readBootID()
		file := tscFile()
		if khz, ok := rememberedTSC(file, bootID); ok {
			tscKHz = khz
			return
		}
		tscKHz = measureTSCKHz()
		if tscKHz != 0 && bootID != "" && file != "" {
			rememberTSC(file, bootID, tscKHz)
		}
	})
	return tscKHz
}

func measureTSCKHz() int {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t0, c0 := time.Now(), rdtsc()
	time.Sleep(20 * time.Millisecond)
	c1, t1 := rdtsc(), time.Now()
	us := t1.Sub(t0).Microseconds()
	if us <= 0 || c1 <= c0 {
		return 0
	}
	khz := int((c1 - c0) * 1000 / uint64(us))
	if !plausibleTSC(khz) {
		return 0
	}
	return khz
}

// plausibleTSC: 100 MHz .. 10 GHz, else distrust.
func plausibleTSC(khz int) bool { return khz > 100_000 && khz < 10_000_000 }

func readBootID() string {
	b, err := os.ReadFile(bootIDFile)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func tscFile() string {
	d, err := paths.Resolve()
	if err != nil {
		return ""
	}
	return filepath.Join(d.Cache, "probes", "tsc")
}

// rememberedTSC reads "BOOT_ID KHZ" from file; only this boot's counts.
func rememberedTSC(file, bootID string) (int, bool) {
	if file == "" || bootID == "" {
		return 0, false
	}
	b, err := os.ReadFile(file)
	if err != nil || len(b) > 128 {
		return 0, false
	}
	id, v, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	if !ok || id != bootID {
		return 0, false
	}
	khz, err := strconv.Atoi(v)
	if err != nil || !plausibleTSC(khz) {
		return 0, false
	}
	return khz, true
}

func rememberTSC(file, bootID string, khz int) {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return
	}
	tmp := fmt.Sprintf("%s.%d", file, os.Getpid())
	if os.WriteFile(tmp, fmt.Appendf(nil, "%s %d\n", bootID, khz), 0o600) == nil {
		_ = os.Rename(tmp, file)
	}
}
