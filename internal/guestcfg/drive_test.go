package guestcfg

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestDriveRoundTrip(t *testing.T) {
	c := valid()
	c.Policy.Console = true
	c.HostPublicKey, c.GuestPrivateKey = "host-pub", "guest-priv"
	b, err := EncodeDrive(c)
	if err != nil {
		t.Fatal(err)
	}
	// The host pads the disk; trailing zeros are not the config's.
	disk := append(b, make([]byte, 4096)...)
	if !IsDrive(bytes.NewReader(disk)) {
		t.Fatal("IsDrive: false for an encoded drive")
	}
	got, err := ReadDrive(bytes.NewReader(disk))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("round trip: got %+v, want %+v", got, c)
	}
}

func TestReadDriveRejects(t *testing.T) {
	good, err := EncodeDrive(valid())
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name string
		in   []byte
		want string // "" means ErrNotDrive
	}{
		{"empty", nil, ""},
		{"ext4-like zeros", make([]byte, 4096), ""},
		{"short header", good[:20], ""},
		{"bad magic", mod(func(b []byte) []byte { b[0] = 'X'; return b }), ""},
		{"zero length", mod(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 0); return b }), "out of range"},
		{"oversize length", mod(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], MaxSize+1); return b }), "out of range"},
		{"truncated payload", good[:len(good)-5], "payload"},
		{"flipped payload byte", mod(func(b []byte) []byte { b[len(b)-3] ^= 1; return b }), "digest mismatch"},
		{"flipped digest byte", mod(func(b []byte) []byte { b[12] ^= 1; return b }), "digest mismatch"},
		{"valid digest, invalid config", driveOf([]byte(`{"version":9}`)), "version"},
		{"valid digest, trailing data", driveOf([]byte(`{"version":1,"hostname":"a","transport":{"kind":"vsock"}} x`)), "trailing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadDrive(bytes.NewReader(tt.in))
			switch {
			case tt.want == "" && !errors.Is(err, ErrNotDrive):
				t.Fatalf("got %v, want ErrNotDrive", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want error containing %q", err, tt.want)
			}
		})
	}
}

// driveOf frames payload as a drive with a correct digest.
func driveOf(payload []byte) []byte {
	c := valid()
	b, _ := EncodeDrive(c)
	h := b[:driveHeader]
	binary.LittleEndian.PutUint32(h[8:], uint32(len(payload)))
	sum := sha256Sum(payload)
	copy(h[12:], sum)
	return append(append([]byte(nil), h...), payload...)
}

func FuzzReadDrive(f *testing.F) {
	b, _ := EncodeDrive(valid())
	f.Add(b)
	f.Add(b[:driveHeader])
	f.Add(driveOf([]byte(`{"version":1}`)))
	f.Add(append(b, 0, 0, 0))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := ReadDrive(bytes.NewReader(in))
		if err != nil {
			return
		}
		if c.Validate() != nil {
			t.Fatal("ReadDrive accepted an invalid config")
		}
		// What is accepted survives a round trip unchanged.
		re, err := EncodeDrive(c)
		if err != nil {
			t.Fatalf("accepted config does not re-encode: %v", err)
		}
		c2, err := ReadDrive(bytes.NewReader(re))
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip: %+v, %v; want %+v", c2, err, c)
		}
	})
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
