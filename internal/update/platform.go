package update

import "runtime"

// The running platform, variables so tests can play another.
var (
	runtimeGOOS   = runtime.GOOS
	runtimeGOARCH = runtime.GOARCH
)
