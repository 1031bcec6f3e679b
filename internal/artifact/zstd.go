package artifact

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// newEncoder returns the one encoder configuration chunks are compressed
// with. Fixed level and window and a single goroutine make the output a
// function of the input alone (for this library version), so packing the
// same files twice yields the same layer digests and a second push uploads
// nothing.
func newEncoder() (*zstd.Encoder, error) {
	e, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(8<<20),
		zstd.WithEncoderCRC(true),
		// An all-zero chunk has no data: its blob is an empty frame, not
		// zero bytes (a layer must have some).
		zstd.WithZeroFrames(true),
	)
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	return e, nil
}

// maxWindow bounds what a hostile stream can make the decoder allocate; our
// encoder uses 8 MiB, the rest is headroom for future settings.
const maxWindow = 64 << 20

func newDecoder() (*zstd.Decoder, error) {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxWindow(maxWindow),
		zstd.WithDecoderMaxMemory(maxWindow),
		// The frame checksum is not checked: every blob's SHA-256 is,
		// before its bytes are trusted, which leaves the xxhash nothing to
		// add but a share of the decoding time.
		zstd.IgnoreChecksum(true),
	)
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return d, nil
}
