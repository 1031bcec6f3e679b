package image

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

const fakeDep = `kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/char/hw_random/virtio-rng.ko.zst: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/a/loop1.ko: kernel/a/loop2.ko
kernel/a/loop2.ko: kernel/a/loop1.ko
kernel/a/dangling.ko: kernel/a/gone.ko
`

const fakeBuiltin = `kernel/fs/ext4/ext4.ko
kernel/drivers/virtio/virtio_ring.ko
`

func fakeModulesDir(t *testing.T, builtin string) string {
	t.Helper()
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, "modules.dep"), []byte(fakeDep), 0o644); err != nil {
		t.Fatal(err)
	}
	if builtin != "" {
		if err := os.WriteFile(filepath.Join(d, "modules.builtin"), []byte(builtin), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func TestResolveModules(t *testing.T) {
	tests := []struct {
		name     string
		builtin  string
		wanted   []string
		required []string
		want     string // names in load order
		wantErr  string
	}{
		{
			name:   "deps first, stable",
			wanted: []string{"virtio_blk", "virtio_mmio", "virtio_console"},
			want:   "virtio_ring virtio virtio_blk virtio_mmio virtio_console",
		},
		{
			name:    "built-ins skipped",
			builtin: fakeBuiltin,
			wanted:  []string{"ext4", "virtio_ring", "virtio_blk"},
			want:    "virtio virtio_blk",
		},
		{
			name:   "net chain and hyphenated file",
			wanted: []string{"virtio_net", "virtio_rng"},
			want:   "failover net_failover virtio_ring virtio virtio_net virtio_rng",
		},
		{
			name:     "optional missing skipped",
			wanted:   []string{"vsock", "virtio_blk"},
			required: []string{"virtio_blk"},
			want:     "virtio_ring virtio virtio_blk",
		},
		{
			name:     "required missing",
			wanted:   []string{"vsock", "virtio_blk"},
			required: []string{"vsock"},
			wantErr:  "required kernel module vsock",
		},
		{
			name:    "cycle",
			wanted:  []string{"loop1"},
			wantErr: "cycle",
		},
		{
			name:    "dangling dependency",
			wanted:  []string{"dangling"},
			wantErr: "module gone (needed by dangling)",
		},
		{
			name:   "duplicates collapse",
			wanted: []string{"virtio", "virtio_ring", "virtio"},
			want:   "virtio_ring virtio",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := fakeModulesDir(t, tt.builtin)
			mods, err := resolveModules(d, tt.wanted, tt.required)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, m := range mods {
				names = append(names, m.Name)
				if !strings.HasPrefix(m.Path, d+"/kernel/") {
					t.Errorf("%s: path %s", m.Name, m.Path)
				}
			}
			if got := strings.Join(names, " "); got != tt.want {
				t.Errorf("order:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/drivers/char/hw_random/virtio-rng.ko.zst": "virtio_rng",
		"virtio_blk.ko":   "virtio_blk",
		"a/b/net-x.ko.xz": "net_x",
		"failover":        "failover",
	} {
		if got := moduleName(in); got != want {
			t.Errorf("moduleName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReadModuleDecompresses(t *testing.T) {
	elf := append([]byte("\x7fELF"), bytes.Repeat([]byte{1, 2, 3}, 1000)...)
	var gz, xzb, zst bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(elf)
	gw.Close()
	xw, err := xz.NewWriter(&xzb)
	if err != nil {
		t.Fatal(err)
	}
	xw.Write(elf)
	xw.Close()
	zw, err := zstd.NewWriter(&zst)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(elf)
	zw.Close()

	d := t.TempDir()
	tests := []struct {
		file    string
		data    []byte
		wantErr bool
	}{
		{"a.ko", elf, false},
		{"b.ko.gz", gz.Bytes(), false},
		{"c.ko.xz", xzb.Bytes(), false},
		{"d.ko.zst", zst.Bytes(), false},
		{"e.ko", []byte("not elf"), true},
		{"f.ko.xz", []byte("garbage"), true},
		{"g.ko.bz2", elf, true},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			p := filepath.Join(d, tt.file)
			if err := os.WriteFile(p, tt.data, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := readModule(p)
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, elf) {
				t.Fatal("content differs")
			}
		})
	}
}

// FuzzParseModulesDep: module indexes may come from unpacked packages, so the
// parser must not panic on any input, and every entry it returns is named.
func FuzzParseModulesDep(f *testing.F) {
	f.Add(fakeDep)
	f.Add("a.ko:\n")
	f.Add("no colon here\n")
	f.Add(":::\n\n#c\n x.ko.zst :  y.ko  \n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseModulesDep(strings.NewReader(s))
		if err != nil {
			return
		}
		for name, e := range m {
			if name != moduleName(e.path) {
				t.Fatalf("entry %q has path %q", name, e.path)
			}
		}
	})
}
