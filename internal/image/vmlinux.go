package image

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// maxVmlinux bounds a decompressed kernel; distro vmlinux files are tens
// of MiB.
const maxVmlinux = 512 << 20

// ExtractVmlinux writes the uncompressed kernel inside kernelPath to dst, for
// VMMs that cannot boot a compressed image (Firecracker): an ELF vmlinux from
// an x86 bzImage, the raw Image from an arm64 Image.gz or EFI zboot image. An
// ELF or a raw arm64 Image is copied as is. dst is replaced atomically.
func ExtractVmlinux(kernelPath, dst string) error {
	f, err := os.Open(kernelPath)
	if err != nil {
		return fmt.Errorf("extract vmlinux: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKernelImage+1))
	f.Close()
	if err != nil {
		return fmt.Errorf("extract vmlinux: read %s: %w", kernelPath, err)
	}
	if len(b) > maxKernelImage {
		return fmt.Errorf("extract vmlinux: %s is larger than %d bytes", kernelPath, maxKernelImage)
	}
	out, err := uncompressedKernel(b, maxVmlinux)
	if err != nil {
		return fmt.Errorf("extract vmlinux from %s: %w", kernelPath, err)
	}
	return writeFileAtomic(dst, out)
}

// uncompressedKernel dispatches on the image's format.
func uncompressedKernel(b []byte, limit int) ([]byte, error) {
	switch {
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		return b, checkVmlinuxELF(b)
	case isArm64Image(b):
		return b, nil
	case len(b) >= 0x210 && string(b[0x202:0x206]) == "HdrS":
		h, err := parseBzImage(b)
		if err != nil {
			return nil, err
		}
		out, err := decompressPayload(b[h.payloadStart:h.payloadStart+h.payloadLen], limit)
		if err != nil {
			return nil, fmt.Errorf("bzImage payload: %w", err)
		}
		if err := checkVmlinuxELF(out); err != nil {
			return nil, err
		}
		return trimELF(out), nil
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		out, err := readAllMax(gzipReader(b), limit)
		if err != nil {
			return nil, fmt.Errorf("gunzip: %w", err)
		}
		if !isArm64Image(out) {
			return nil, errors.New("gunzipped kernel is not an arm64 Image")
		}
		return out, nil
	case len(b) >= 0x38 && string(b[0:2]) == "MZ" && string(b[4:8]) == "zimg":
		return unzboot(b, limit)
	}
	return nil, errors.New("unknown kernel image format (want an x86 bzImage, an ELF vmlinux or an arm64 Image)")
}

// isArm64Image checks the arm64 boot header magic "ARM\x64" at 0x38.
func isArm64Image(b []byte) bool {
	return len(b) >= 64 && string(b[0x38:0x3c]) == "ARM\x64"
}

// bzImage is what ExtractVmlinux needs of an x86 setup header.
type bzImage struct {
	version      uint16
	payloadStart int // file offset of the compressed vmlinux
	payloadLen   int
}

// parseBzImage reads the x86 boot protocol setup header
// (Documentation/arch/x86/boot.rst): the protected-mode code starts after
// (setup_sects+1) 512-byte sectors, and from protocol 2.08 payload_offset
// (0x248) and payload_length (0x24c) locate the compressed kernel in it.
func parseBzImage(b []byte) (*bzImage, error) {
	if len(b) < 0x250 {
		return nil, errors.New("bzImage: shorter than its setup header")
	}
	if le16(b[0x1fe:]) != 0xaa55 || string(b[0x202:0x206]) != "HdrS" {
		return nil, errors.New("bzImage: no boot signature")
	}
	h := &bzImage{version: le16(b[0x206:])}
	if h.version < 0x0208 {
		return nil, fmt.Errorf("bzImage: boot protocol %d.%02d has no payload fields (need 2.08)", h.version>>8, h.version&0xff)
	}
	sects := int(b[0x1f1])
	if sects == 0 {
		sects = 4 // historic default
	}
	pm := (sects + 1) * 512
	off, n := int(le32(b[0x248:])), int(le32(b[0x24c:]))
	if pm > len(b) || off > len(b)-pm || n > len(b)-pm-off || n < 8 {
		return nil, fmt.Errorf("bzImage: payload %d+%d bytes past setup %d does not fit the %d-byte file", off, n, pm, len(b))
	}
	h.payloadStart, h.payloadLen = pm+off, n
	return h, nil
}

// decompressPayload undoes the kernel's compression, found by magic. The
// kernel build appends the uncompressed size as a little-endian u32, which
// also bounds and checks the output.
func decompressPayload(p []byte, limit int) ([]byte, error) {
	if len(p) < 8 {
		return nil, errors.New("payload too short")
	}
	size := int(le32(p[len(p)-4:]))
	data := p[:len(p)-4]
	if size > limit {
		return nil, fmt.Errorf("payload claims %d bytes uncompressed, limit %d", size, limit)
	}
	var (
		out []byte
		err error
	)
	switch {
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		out, err = readAllMax(gzipReader(data), size)
	case bytes.HasPrefix(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		var xr io.Reader
		if xr, err = (xz.ReaderConfig{DictCap: dictCap(limit)}).NewReader(bytes.NewReader(data)); err == nil {
			out, err = readAllMax(xr, size)
		}
		if err != nil {
			err = fmt.Errorf("xz (x86 kernels use a BCJ filter, which is not supported): %w", err)
		}
	case bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		var zr *zstd.Decoder
		if zr, err = zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(limit)+1<<20)); err == nil {
			out, err = readAllMax(zr, size)
			zr.Close()
		}
	case bytes.HasPrefix(data, []byte{0x5d, 0, 0}):
		var lr io.Reader
		if lr, err = (lzma.ReaderConfig{DictCap: dictCap(limit)}).NewReader(bytes.NewReader(data)); err == nil {
			out, err = readAllMax(lr, size)
		}
	case bytes.HasPrefix(data, []byte{0x02, 0x21, 0x4c, 0x18}):
		out, err = unlz4Legacy(data, size)
	case bytes.HasPrefix(data, []byte("BZh")):
		out, err = readAllMax(bzip2.NewReader(bytes.NewReader(data)), size)
	case bytes.HasPrefix(data, []byte{0x89, 'L', 'Z', 'O'}):
		return nil, errors.New("LZO-compressed kernels are not supported")
	default:
		return nil, fmt.Errorf("unknown compression (magic % x)", data[:4])
	}
	if err != nil {
		return nil, err
	}
	if len(out) != size {
		return nil, fmt.Errorf("decompressed %d bytes, the kernel says %d", len(out), size)
	}
	return out, nil
}

// dictCap bounds the LZMA dictionary a header may ask for; the decoder
// allocates it up front. Kernels use at most 64 MiB (lzma -9).
func dictCap(limit int) int {
	return max(lzma.MinDictCap, min(limit, 128<<20))
}

// gzipReader reads a gzip stream; errors surface on the first Read.
func gzipReader(b []byte) io.Reader {
	gr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return errReader{err}
	}
	gr.Multistream(false) // trailing bytes after the member are not data
	return gr
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// readAllMax reads r to its end, failing past limit bytes.
func readAllMax(r io.Reader, limit int) ([]byte, error) {
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(out) > limit {
		return nil, fmt.Errorf("more than %d bytes decompressed", limit)
	}
	return out, nil
}

// unzboot unpacks an EFI zboot image (arm64 CONFIG_EFI_ZBOOT): "zimg" at 4,
// payload offset and size at 8 and 12, compression name at 0x18.
func unzboot(b []byte, limit int) ([]byte, error) {
	off, n := int(le32(b[8:])), int(le32(b[12:]))
	if off > len(b) || n > len(b)-off || n < 4 {
		return nil, errors.New("zboot: payload outside the file")
	}
	comp := string(bytes.TrimRight(b[0x18:0x38], "\x00"))
	data := b[off : off+n]
	var (
		out []byte
		err error
	)
	switch comp {
	case "gzip":
		out, err = readAllMax(gzipReader(data), limit)
	case "zstd":
		var zr *zstd.Decoder
		if zr, err = zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderConcurrency(1)); err == nil {
			out, err = readAllMax(zr, limit)
			zr.Close()
		}
	default:
		return nil, fmt.Errorf("zboot: unsupported compression %q", comp)
	}
	if err != nil {
		return nil, fmt.Errorf("zboot %s: %w", comp, err)
	}
	if !isArm64Image(out) {
		return nil, errors.New("zboot payload is not an arm64 Image")
	}
	return out, nil
}

// checkVmlinuxELF accepts an x86 executable whose entry point lies in a
// PT_LOAD segment (physical or virtual address).
func checkVmlinuxELF(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("decompressed kernel is not ELF: %w", err)
	}
	if f.Type != elf.ET_EXEC || (f.Machine != elf.EM_X86_64 && f.Machine != elf.EM_386) {
		return fmt.Errorf("decompressed kernel is %s %s, want an x86 executable", f.Machine, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		if (f.Entry >= p.Paddr && f.Entry-p.Paddr < p.Memsz) || (f.Entry >= p.Vaddr && f.Entry-p.Vaddr < p.Memsz) {
			return nil
		}
	}
	return fmt.Errorf("vmlinux entry %#x is in no PT_LOAD segment", f.Entry)
}

// trimELF drops what follows the ELF file proper; a relocatable x86 kernel
// appends its relocation table to vmlinux before compressing.
func trimELF(b []byte) []byte {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return b
	}
	end := uint64(0)
	grow := func(v uint64) {
		if v > end {
			end = v
		}
	}
	for _, p := range f.Progs {
		grow(p.Off + p.Filesz)
	}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOBITS {
			grow(s.Offset + s.FileSize)
		}
	}
	if f.Class == elf.ELFCLASS64 {
		shoff, shnum, shentsize := le64(b[0x28:]), uint64(le16(b[0x3c:])), uint64(le16(b[0x3a:]))
		grow(shoff + shnum*shentsize)
	}
	if end == 0 || end > uint64(len(b)) {
		return b
	}
	return b[:end]
}

func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }
