package main

// tscHalves is RDTSC: EDX:EAX.
func tscHalves() (lo, hi uint32)

// rdtsc reads the time-stamp counter. Under TCG the guest's TSC is the
// host's, at the rate mvm passes as tsc_early_khz, whichever clocksource
// the guest kernel settled on.
func rdtsc() uint64 {
	lo, hi := tscHalves()
	return uint64(hi)<<32 | uint64(lo)
}
