package sign

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestReleaseSignature(t *testing.T) {
	key, err := GenerateKey("release")
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateKey("other")
	if err != nil {
		t.Fatal(err)
	}
	sums := []byte("0123  mvmctl-linux-amd64\n")
	sig, err := SignRelease(key, sums)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := SignRelease(key, sums)
	if !bytes.Equal(sig, again) {
		t.Fatalf("signing twice gave different files:\n%s%s", sig, again)
	}
	trusted := NewKeySet(key.Public())
	if id, err := VerifyRelease(sig, sums, trusted); err != nil || id != key.Public().ID {
		t.Fatalf("VerifyRelease = %q, %v", id, err)
	}
	// A template envelope over the same digest must not pass as a release
	// signature, nor the other way round.
	d := sha256.Sum256(sums)
	env, err := Sign(key, "sha256:"+hex.EncodeToString(d[:]))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(env, "sha256:"+hex.EncodeToString(d[:]), trusted); err != nil {
		t.Fatalf("template envelope: %v", err)
	}
	fields := strings.Fields(string(sig))
	tests := []struct {
		name    string
		sig     []byte
		sums    []byte
		trusted KeySet
		want    string
	}{
		{"tampered sums", sig, []byte("0124  mvmctl-linux-amd64\n"), trusted, "altered"},
		{"untrusted key", sig, sums, NewKeySet(other.Public()), "not the trusted release key"},
		{"no trailing newline", bytes.TrimSuffix(sig, []byte("\n")), sums, trusted, "one line"},
		{"two lines", append(append([]byte{}, sig...), sig...), sums, trusted, "one line"},
		{"wrong magic", []byte("mvm-release-sig-v2 " + fields[1] + " " + fields[2] + "\n"), sums, trusted, "want"},
		{"bad key id", []byte(fields[0] + " ed25519:XYZ " + fields[2] + "\n"), sums, trusted, "key ID"},
		{"short signature", []byte(fields[0] + " " + fields[1] + " AAAA\n"), sums, trusted, "base64"},
		{"double space", []byte(fields[0] + "  " + fields[1] + " " + fields[2] + "\n"), sums, trusted, "single spaces"},
		{"template envelope", env, sums, trusted, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := VerifyRelease(tt.sig, tt.sums, tt.trusted)
			if !errors.Is(err, ErrReleaseSignature) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrReleaseSignature containing %q", err, tt.want)
			}
		})
	}
}
