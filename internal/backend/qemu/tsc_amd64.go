package qemu

func rdtsc() uint64
