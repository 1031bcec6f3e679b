package guestcfg

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// DriveFormat names the raw config drive layout below in image manifests
// and VM records; "" there means the older ext4 drive (an agent that
// predates this format reads only that).
const DriveFormat = "mvmcfg1"

// A raw config drive is the config straight on the block device, no
// filesystem: the host writes it without mkfs, the guest reads it without
// mounting. Layout, all of it read-only to the guest:
//
//	0   8 bytes  driveMagic
//	8   4 bytes  payload length, little endian, 1..MaxSize
//	12 32 bytes  SHA-256 of the payload
//	44  payload  the config, as Encode writes it
//
// The digest catches a torn or truncated write; it is not a signature (the
// drive is what first gives the guest a key to check anything with), and
// needs none: only the host can write the drive.
var driveMagic = [8]byte{'M', 'V', 'M', '-', 'C', 'F', 'G', '1'}

const driveHeader = 8 + 4 + sha256.Size

// ErrNotDrive means the bytes do not start like a raw config drive.
var ErrNotDrive = errors.New("not an mvm config drive")

// EncodeDrive returns the drive's bytes for c (the caller pads the disk).
func EncodeDrive(c *Config) ([]byte, error) {
	payload, err := c.Encode()
	if err != nil {
		return nil, err
	}
	if len(payload) > MaxSize {
		return nil, fmt.Errorf("config is %d bytes, limit %d", len(payload), MaxSize)
	}
	out := make([]byte, driveHeader, driveHeader+len(payload))
	copy(out, driveMagic[:])
	binary.LittleEndian.PutUint32(out[8:], uint32(len(payload)))
	sum := sha256.Sum256(payload)
	copy(out[12:], sum[:])
	return append(out, payload...), nil
}

// IsDrive reports whether r starts with the raw drive's magic.
func IsDrive(r io.ReaderAt) bool {
	var m [len(driveMagic)]byte
	_, err := r.ReadAt(m[:], 0)
	return err == nil && m == driveMagic
}

// ReadDrive decodes a raw config drive; the config is untrusted input
// (size-limited, digest-checked, then strictly decoded by Decode).
func ReadDrive(r io.ReaderAt) (*Config, error) {
	var h [driveHeader]byte
	if _, err := r.ReadAt(h[:], 0); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, ErrNotDrive
		}
		return nil, fmt.Errorf("read config drive header: %w", err)
	}
	if [len(driveMagic)]byte(h[:len(driveMagic)]) != driveMagic {
		return nil, ErrNotDrive
	}
	n := binary.LittleEndian.Uint32(h[8:])
	if n == 0 || n > MaxSize {
		return nil, fmt.Errorf("config drive: payload length %d out of range 1..%d", n, MaxSize)
	}
	payload := make([]byte, n)
	if _, err := r.ReadAt(payload, driveHeader); err != nil {
		return nil, fmt.Errorf("config drive: read %d-byte payload: %w", n, err)
	}
	if sum := sha256.Sum256(payload); !bytes.Equal(sum[:], h[12:driveHeader]) {
		return nil, errors.New("config drive: payload digest mismatch (torn or corrupt write)")
	}
	return Decode(bytes.NewReader(payload))
}
