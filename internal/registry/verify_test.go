package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestVerifyingReader(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789"), 1000)
	sum := sha256.Sum256(content)
	good := Descriptor{Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(content))}
	for _, c := range []struct {
		name    string
		d       Descriptor
		r       io.Reader
		wantErr string
	}{
		{"exact", good, bytes.NewReader(content), ""},
		{"one byte at a time", good, iotest.OneByteReader(bytes.NewReader(content)), ""},
		{"data with EOF", good, iotest.DataErrReader(bytes.NewReader(content)), ""},
		{"empty", Descriptor{Digest: "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}, strings.NewReader(""), ""},
		{"short", good, bytes.NewReader(content[:len(content)-1]), "ended after"},
		{"long", good, io.MultiReader(bytes.NewReader(content), strings.NewReader("x")), "longer than"},
		{"wrong digest", Descriptor{Digest: "sha256:" + strings.Repeat("0", 64), Size: good.Size}, bytes.NewReader(content), "hashes to"},
		{"read error", good, iotest.TimeoutReader(bytes.NewReader(content)), "timeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := &verifyingReader{r: c.r, d: c.d, h: sha256.New()}
			got, err := io.ReadAll(v)
			if c.wantErr == "" {
				if err != nil || !bytes.Equal(got, content[:c.d.Size]) {
					t.Fatalf("read %d bytes, %v; want the %d bytes", len(got), err, c.d.Size)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("err = %v; want %q", err, c.wantErr)
			}
			// The bytes that would complete a bad blob are withheld.
			if int64(len(got)) >= c.d.Size && c.d.Size > 0 {
				t.Errorf("delivered all %d bytes of a bad blob", len(got))
			}
		})
	}
}
