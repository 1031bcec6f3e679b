#include "textflag.h"

// func tscHalves() (lo, hi uint32)
TEXT ·tscHalves(SB), NOSPLIT, $0-8
	RDTSC
	MOVL AX, lo+0(FP)
	MOVL DX, hi+4(FP)
	RET
