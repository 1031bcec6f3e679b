package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// fakeModule is a minimal ELF64 relocatable object whose .modinfo carries
// depends=, enough for moduleDepends.
func fakeModule(depends string) []byte {
	modinfo := []byte("license=GPL\x00depends=" + depends + "\x00name=x\x00")
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	modOff := ehsize
	strOff := modOff + len(modinfo)
	shOff := (strOff + len(shstr) + 7) &^ 7
	b := make([]byte, shOff+3*shentsize)
	copy(b, "\x7fELF\x02\x01\x01")
	le := binary.LittleEndian
	le.PutUint16(b[16:], 1)  // ET_REL
	le.PutUint16(b[18:], 62) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[40:], uint64(shOff))
	le.PutUint16(b[52:], ehsize)
	le.PutUint16(b[58:], shentsize)
	le.PutUint16(b[60:], 3) // shnum
	le.PutUint16(b[62:], 2) // shstrndx
	copy(b[modOff:], modinfo)
	copy(b[strOff:], shstr)
	sh := func(i int, name, typ uint32, off, size int) {
		s := b[shOff+i*shentsize:]
		le.PutUint32(s[0:], name)
		le.PutUint32(s[4:], typ)
		le.PutUint64(s[24:], uint64(off))
		le.PutUint64(s[32:], uint64(size))
		le.PutUint64(s[48:], 1)
	}
	sh(1, 1, 1, modOff, len(modinfo)) // .modinfo, PROGBITS
	sh(2, 10, 3, strOff, len(shstr))  // .shstrtab, STRTAB
	return b
}

type tarEntry struct {
	name string
	body []byte
	typ  byte
	link string
}

func makeTar(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o644, Size: int64(len(e.body)), Linkname: e.link}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write(e.body)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func compressAs(t *testing.T, kind string, raw []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch kind {
	case "gz":
		w := gzip.NewWriter(&b)
		w.Write(raw)
		w.Close()
	case "xz":
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(raw)
		w.Close()
	case "zst":
		w, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(raw)
		w.Close()
	case "":
		return raw
	default:
		t.Fatalf("compression %q", kind)
	}
	return b.Bytes()
}

func makeDeb(t *testing.T, kind string, entries []tarEntry) []byte {
	name := "data.tar"
	if kind != "" {
		name += "." + kind
	}
	return makeAr(
		arMember{"debian-binary", []byte("2.0\n")},
		arMember{"control.tar.xz", compressAs(t, "xz", makeTar(t, nil))},
		arMember{name, compressAs(t, kind, makeTar(t, entries))},
	)
}

const testRel = "6.1.0-99-cloud-amd64"

func kernelEntries() []tarEntry {
	md := "./lib/modules/" + testRel + "/"
	return []tarEntry{
		{name: "./", typ: tar.TypeDir},
		{name: "./boot/", typ: tar.TypeDir},
		{name: "./boot/vmlinuz-" + testRel, body: []byte("KERNEL")},
		{name: "./boot/config-" + testRel, body: []byte("CONFIG_X=y\n")},
		{name: md + "modules.builtin", body: []byte("kernel/fs/ext4/ext4.ko\n")},
		{name: md + "modules.order", body: []byte("kernel/drivers/net/virtio_net.ko\n")},
		{name: md + "kernel/drivers/virtio/virtio.ko", body: fakeModule("")},
		{name: md + "kernel/drivers/virtio/virtio_ring.ko", body: fakeModule("virtio")},
		{name: md + "kernel/drivers/net/net_failover.ko", body: fakeModule("")},
		{name: md + "kernel/drivers/net/virtio_net.ko", body: fakeModule("net_failover,virtio_ring,virtio")},
		{name: md + "build", typ: tar.TypeSymlink, link: "/usr/src/linux-headers"},
		{name: "./usr/share/doc/linux-image/changelog.gz", body: []byte("x")},
	}
}

func TestUnpackKernelDeb(t *testing.T) {
	for _, kind := range []string{"xz", "zst", "gz", ""} {
		t.Run("data.tar."+kind, func(t *testing.T) {
			dir := t.TempDir()
			deb := filepath.Join(dir, "k.deb")
			os.WriteFile(deb, makeDeb(t, kind, kernelEntries()), 0o644)
			root := filepath.Join(dir, "kernels")
			k, err := unpackKernelDeb(deb, root, "")
			if err != nil {
				t.Fatal(err)
			}
			sum, _ := hashFile(deb)
			if want := filepath.Join(root, sum, "boot", "vmlinuz-"+testRel); k.Image != want || k.Release != testRel {
				t.Fatalf("kernel %+v, want image %s", k, want)
			}
			if b, _ := os.ReadFile(k.Image); string(b) != "KERNEL" {
				t.Errorf("vmlinuz = %q", b)
			}
			for _, skipped := range []string{"boot/config-" + testRel, "usr", "lib/modules/" + testRel + "/build"} {
				if _, err := os.Lstat(filepath.Join(root, sum, skipped)); err == nil {
					t.Errorf("%s was extracted", skipped)
				}
			}
			mods, err := resolveModules(k.ModulesDir, []string{"virtio_net", "ext4"}, []string{"virtio_net"})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, m := range mods {
				names = append(names, m.Name)
				if _, err := readModule(m.Path); err != nil {
					t.Error(err)
				}
			}
			if got := strings.Join(names, ","); got != "net_failover,virtio,virtio_ring,virtio_net" {
				t.Errorf("load order %s", got)
			}
			// Unpacking again reuses the tree.
			k2, err := unpackKernelDeb(deb, root, sum)
			if err != nil || k2.Image != k.Image {
				t.Errorf("second unpack: %+v, %v", k2, err)
			}
			if ents, _ := os.ReadDir(root); len(ents) != 1 {
				t.Errorf("kernel cache holds %d entries, want 1", len(ents))
			}
		})
	}
}

func TestUnpackKernelDebRejects(t *testing.T) {
	base := kernelEntries()
	with := func(extra ...tarEntry) []tarEntry { return append(append([]tarEntry(nil), base...), extra...) }
	md := "lib/modules/" + testRel + "/"
	tests := []struct {
		name    string
		deb     func(t *testing.T) []byte
		wantErr string
	}{
		{"dotdot", func(t *testing.T) []byte {
			return makeDeb(t, "gz", with(tarEntry{name: "./lib/modules/../../../etc/passwd", body: []byte("x")}))
		}, "escapes"},
		{"absolute", func(t *testing.T) []byte {
			return makeDeb(t, "gz", with(tarEntry{name: "/boot/vmlinuz-evil", body: []byte("x")}))
		}, "unsafe member name"},
		{"two kernels", func(t *testing.T) []byte {
			return makeDeb(t, "gz", with(tarEntry{name: "./boot/vmlinuz-6.1.0-98-cloud-amd64", body: []byte("x")}))
		}, "2 kernel images"},
		{"duplicate module", func(t *testing.T) []byte {
			return makeDeb(t, "gz", with(tarEntry{name: md + "kernel/other/virtio.ko", body: fakeModule("")}))
		}, "twice"},
		{"missing dependency", func(t *testing.T) []byte {
			return makeDeb(t, "gz", with(tarEntry{name: md + "kernel/x/needy.ko", body: fakeModule("absent")}))
		}, "lacks"},
		{"no kernel", func(t *testing.T) []byte {
			return makeDeb(t, "gz", base[4:])
		}, "no boot/vmlinuz"},
		{"no modules", func(t *testing.T) []byte {
			return makeDeb(t, "gz", base[:4])
		}, "has no lib/modules"},
		{"no data.tar", func(t *testing.T) []byte {
			return makeAr(arMember{"debian-binary", []byte("2.0\n")})
		}, "no data.tar"},
		{"unknown compression", func(t *testing.T) []byte {
			return makeAr(arMember{"debian-binary", []byte("2.0\n")}, arMember{"data.tar.lz", []byte("x")})
		}, "unsupported compression"},
		{"not a deb", func(t *testing.T) []byte { return []byte("PK\x03\x04 this is a zip file") }, "not an ar archive"},
		{"format 3", func(t *testing.T) []byte {
			return makeAr(arMember{"debian-binary", []byte("3.0\n")}, arMember{"data.tar", makeTar(t, base)})
		}, "unsupported .deb format"},
		{"corrupt data", func(t *testing.T) []byte {
			return makeAr(arMember{"debian-binary", []byte("2.0\n")}, arMember{"data.tar.xz", []byte("\xfd7zXZ\x00garbage")})
		}, "data.tar"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			deb := filepath.Join(dir, "k.deb")
			os.WriteFile(deb, tt.deb(t), 0o644)
			root := filepath.Join(dir, "kernels")
			_, err := unpackKernelDeb(deb, root, "")
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if ents, _ := os.ReadDir(root); len(ents) != 0 {
				t.Errorf("failed unpack left %d entries in the kernel cache", len(ents))
			}
			if _, err := os.Stat(filepath.Join(dir, "etc")); err == nil {
				t.Error("path traversal wrote outside the cache")
			}
		})
	}
}

func TestTarMemberPath(t *testing.T) {
	for in, want := range map[string]string{
		"./boot/vmlinuz-1": "boot/vmlinuz-1", "boot//x": "boot/x", "./": ".", "lib/modules/r/": "lib/modules/r",
		"../x": "", "a/../../b": "", "/etc/passwd": "", "a/..": "", "a\\b": "",
	} {
		got, err := tarMemberPath(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("tarMemberPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
