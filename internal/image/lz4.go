package image

import (
	"errors"
	"fmt"
)

// The kernel compresses with `lz4 -l`: the legacy frame format, a magic
// word then blocks of (u32 compressed size, LZ4 block), each decompressing
// independently to at most 8 MiB.
const (
	lz4LegacyMagic = 0x184c2102
	lz4LegacyBlock = 8 << 20
)

// unlz4Legacy decompresses a legacy LZ4 stream to exactly size bytes.
func unlz4Legacy(src []byte, size int) ([]byte, error) {
	if len(src) < 4 || le32(src) != lz4LegacyMagic {
		return nil, errors.New("lz4: no legacy frame magic")
	}
	src = src[4:]
	out := make([]byte, 0, size)
	for len(src) > 0 {
		if len(src) < 4 {
			return nil, fmt.Errorf("lz4: %d stray bytes after the last block", len(src))
		}
		n := le32(src)
		src = src[4:]
		if n == lz4LegacyMagic { // concatenated frames
			continue
		}
		if uint64(n) > uint64(len(src)) {
			return nil, fmt.Errorf("lz4: block of %d bytes, %d left", n, len(src))
		}
		limit := min(len(out)+lz4LegacyBlock, size)
		var err error
		if out, err = lz4Block(out, src[:n], limit); err != nil {
			return nil, err
		}
		src = src[n:]
	}
	return out, nil
}

// lz4Block appends the decompression of one LZ4 block to dst, never
// growing dst past limit. Matches may only reach back into this block.
func lz4Block(dst, src []byte, limit int) ([]byte, error) {
	base := len(dst)
	i := 0
	for {
		if i >= len(src) {
			return nil, errors.New("lz4: block ends inside a sequence")
		}
		tok := src[i]
		i++
		lit := int(tok >> 4)
		if lit == 15 {
			n, j, err := lz4Length(src, i)
			if err != nil {
				return nil, err
			}
			lit, i = lit+n, j
		}
		if lit > len(src)-i || lit > limit-len(dst) {
			return nil, errors.New("lz4: literal run past the block or output")
		}
		dst = append(dst, src[i:i+lit]...)
		i += lit
		if i == len(src) {
			return dst, nil // the last sequence is literals only
		}
		if len(src)-i < 2 {
			return nil, errors.New("lz4: truncated match offset")
		}
		off := int(src[i]) | int(src[i+1])<<8
		i += 2
		if off == 0 || off > len(dst)-base {
			return nil, fmt.Errorf("lz4: match offset %d out of range", off)
		}
		ml := int(tok & 15)
		if ml == 15 {
			n, j, err := lz4Length(src, i)
			if err != nil {
				return nil, err
			}
			ml, i = ml+n, j
		}
		ml += 4
		if ml > limit-len(dst) {
			return nil, errors.New("lz4: match past the output limit")
		}
		start := len(dst) - off
		if off >= ml {
			dst = append(dst, dst[start:start+ml]...)
			continue
		}
		for k := 0; k < ml; k++ { // overlapping copy repeats a pattern
			dst = append(dst, dst[start+k])
		}
	}
}

// lz4Length reads the 255-continued extra length at src[i:].
func lz4Length(src []byte, i int) (n, next int, err error) {
	for {
		if i >= len(src) {
			return 0, 0, errors.New("lz4: truncated length")
		}
		b := src[i]
		i++
		n += int(b)
		if b != 255 {
			return n, i, nil
		}
		if n > 1<<30 {
			return 0, 0, errors.New("lz4: length overflow")
		}
	}
}
