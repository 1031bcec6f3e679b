package image

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// fakeVmlinux is a minimal x86-64 ELF executable: one PT_LOAD holding the
// entry point at physical 0x1000000, followed by junk standing in for the
// relocation table a relocatable kernel appends.
func fakeVmlinux() []byte {
	const ehsize, phentsize = 64, 56
	b := make([]byte, ehsize+phentsize+64)
	le := binary.LittleEndian
	copy(b, "\x7fELF\x02\x01\x01")
	le.PutUint16(b[16:], 2)  // ET_EXEC
	le.PutUint16(b[18:], 62) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], 0x1000000) // entry
	le.PutUint64(b[32:], ehsize)    // phoff
	le.PutUint16(b[52:], ehsize)
	le.PutUint16(b[54:], phentsize)
	le.PutUint16(b[56:], 1)
	p := b[ehsize:]
	le.PutUint32(p[0:], 1) // PT_LOAD
	le.PutUint32(p[4:], 5)
	le.PutUint64(p[8:], ehsize+phentsize)    // offset
	le.PutUint64(p[16:], 0xffffffff81000000) // vaddr
	le.PutUint64(p[24:], 0x1000000)          // paddr
	le.PutUint64(p[32:], 64)                 // filesz
	le.PutUint64(p[40:], 64)                 // memsz
	copy(b[ehsize+phentsize:], bytes.Repeat([]byte{0x90}, 64))
	return append(b, "RELOCS-RELOCS"...)
}

// makeBzImage wraps payload (already compressed, size not yet appended) in
// a boot protocol 2.15 setup header with setup_sects sectors.
func makeBzImage(payload []byte, uncompressed int, sects byte) []byte {
	n := int(sects)
	if n == 0 {
		n = 4
	}
	pm := (n + 1) * 512
	const off = 0x100
	payload = binary.LittleEndian.AppendUint32(append([]byte(nil), payload...), uint32(uncompressed))
	b := make([]byte, pm+off+len(payload)+32)
	b[0x1f1] = sects
	binary.LittleEndian.PutUint16(b[0x1fe:], 0xaa55)
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x206:], 0x020f)
	binary.LittleEndian.PutUint32(b[0x248:], off)
	binary.LittleEndian.PutUint32(b[0x24c:], uint32(len(payload)))
	copy(b[pm+off:], payload)
	return b
}

// lz4Literals encodes b as a legacy LZ4 frame of literal-only blocks.
func lz4Literals(b []byte) []byte {
	out := binary.LittleEndian.AppendUint32(nil, lz4LegacyMagic)
	var blk []byte
	n := len(b)
	if n >= 15 {
		blk = append(blk, 0xf0)
		for n -= 15; n >= 255; n -= 255 {
			blk = append(blk, 255)
		}
		blk = append(blk, byte(n))
	} else {
		blk = append(blk, byte(n<<4))
	}
	blk = append(blk, b...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(blk)))
	return append(out, blk...)
}

func TestLZ4Block(t *testing.T) {
	tests := []struct {
		name    string
		src     []byte
		want    string
		wantErr string
	}{
		{name: "literals", src: []byte("\x50hello"), want: "hello"},
		// "ab" then a 10-byte overlapping match at offset 2, then "!".
		{name: "overlap match", src: []byte("\x26ab\x02\x00\x10!"), want: "abababababab!"},
		{name: "long literal", src: append([]byte{0xf0, 0x05}, bytes.Repeat([]byte("x"), 20)...), want: strings.Repeat("x", 20)},
		{name: "offset zero", src: []byte("\x11a\x00\x00"), wantErr: "offset"},
		{name: "offset too far", src: []byte("\x11a\x05\x00"), wantErr: "offset"},
		{name: "truncated literal", src: []byte("\x50hel"), wantErr: "literal run"},
		{name: "truncated offset", src: []byte("\x11a\x01"), wantErr: "truncated match offset"},
		{name: "truncated length", src: []byte("\xf0"), wantErr: "truncated length"},
		{name: "empty", src: nil, wantErr: "ends inside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lz4Block(nil, tt.src, 1<<20)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := lz4Block(nil, []byte("\x26ab\x02\x00\x10!"), 5); err == nil {
		t.Error("output limit not enforced")
	}
}

func TestExtractVmlinuxSynthetic(t *testing.T) {
	elfBytes := fakeVmlinux()
	elfLen := len(elfBytes) - len("RELOCS-RELOCS")
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(elfBytes)
	w.Close()
	zw, _ := zstd.NewWriter(nil)
	zst := zw.EncodeAll(elfBytes, nil)
	arm := make([]byte, 128)
	copy(arm[0x38:], "ARM\x64")
	var armGz bytes.Buffer
	w = gzip.NewWriter(&armGz)
	w.Write(arm)
	w.Close()

	tests := []struct {
		name    string
		kernel  []byte
		wantLen int
		wantErr string
	}{
		{name: "bzImage gzip", kernel: makeBzImage(gz.Bytes(), len(elfBytes), 4), wantLen: elfLen},
		{name: "bzImage zstd", kernel: makeBzImage(zst, len(elfBytes), 27), wantLen: elfLen},
		{name: "bzImage lz4", kernel: makeBzImage(lz4Literals(elfBytes), len(elfBytes), 1), wantLen: elfLen},
		{name: "elf copied", kernel: elfBytes, wantLen: len(elfBytes)},
		{name: "arm64 Image", kernel: arm, wantLen: len(arm)},
		{name: "arm64 Image.gz", kernel: armGz.Bytes(), wantLen: len(arm)},
		{name: "wrong size trailer", kernel: makeBzImage(gz.Bytes(), len(elfBytes)+1, 4), wantErr: "the kernel says"},
		{name: "lzo", kernel: makeBzImage([]byte("\x89LZO\x00\x0d\x0a\x1a\x0a"), 10, 4), wantErr: "LZO"},
		{name: "not elf inside", kernel: makeBzImage(lz4Literals([]byte("plain text, not a kernel")), 24, 4), wantErr: "not ELF"},
		{name: "old protocol", kernel: func() []byte {
			b := makeBzImage(gz.Bytes(), len(elfBytes), 4)
			binary.LittleEndian.PutUint16(b[0x206:], 0x0206)
			return b
		}(), wantErr: "need 2.08"},
		{name: "payload past end", kernel: func() []byte {
			b := makeBzImage(gz.Bytes(), len(elfBytes), 4)
			binary.LittleEndian.PutUint32(b[0x24c:], 1<<30)
			return b
		}(), wantErr: "does not fit"},
		{name: "garbage", kernel: []byte("#!/bin/sh\necho hi\n"), wantErr: "unknown kernel image format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			src, dst := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "vmlinux")
			os.WriteFile(src, tt.kernel, 0o644)
			err := ExtractVmlinux(src, dst)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if _, err := os.Stat(dst); err == nil {
					t.Error("failed extraction left an output file")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(dst)
			if len(got) != tt.wantLen {
				t.Errorf("vmlinux is %d bytes, want %d", len(got), tt.wantLen)
			}
		})
	}
}

func FuzzParseBzImage(f *testing.F) {
	elfBytes := fakeVmlinux()
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(elfBytes)
	w.Close()
	f.Add(makeBzImage(gz.Bytes(), len(elfBytes), 4))
	f.Add(makeBzImage(lz4Literals(elfBytes), len(elfBytes), 1))
	f.Add(makeBzImage([]byte("\x02\x21\x4c\x18\x05\x00\x00\x00\x26ab\x02\x00"), 12, 0))
	f.Add(makeBzImage([]byte("\x28\xb5\x2f\xfd\x00"), 3, 2))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseBzImage(b)
		if err != nil {
			return
		}
		if h.payloadStart < 0 || h.payloadLen < 0 || h.payloadStart+h.payloadLen > len(b) {
			t.Fatalf("payload %d+%d outside %d bytes", h.payloadStart, h.payloadLen, len(b))
		}
		out, err := uncompressedKernel(b, 1<<20)
		if err == nil && len(out) > 1<<20 && !bytes.Equal(out, b) {
			t.Fatalf("%d bytes decompressed past the limit", len(out))
		}
	})
}

// TestWithVmlinux checks the uncompressed kernel is added to an entry once,
// only on request, and that loadEntry then reports it.
func TestWithVmlinux(t *testing.T) {
	dir := t.TempDir()
	k := filepath.Join(dir, kernelFile)
	os.WriteFile(k, fakeVmlinux(), 0o444)
	a := &Artifacts{Name: "x", Dir: dir, Kernel: k}
	if got, err := withVmlinux(a, BuildOptions{}); err != nil || got.Vmlinux != "" {
		t.Fatalf("not requested: %+v, %v", got, err)
	}
	got, err := withVmlinux(a, BuildOptions{Vmlinux: true})
	if err != nil || got.Vmlinux != filepath.Join(dir, vmlinuxFile) {
		t.Fatalf("requested: %+v, %v", got, err)
	}
	if fi, err := os.Stat(got.Vmlinux); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("vmlinux %v, %v; want a sealed file", fi, err)
	}
}
