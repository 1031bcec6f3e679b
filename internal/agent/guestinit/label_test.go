package guestinit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/guestcfg"
)

func mkfs(t *testing.T, path, label string) {
	t.Helper()
	mk, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("needs mkfs.ext4 (e2fsprogs)")
	}
	if out, err := exec.Command(mk, "-q", "-F", "-L", label, path, "1M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
}

func TestReadExt4Label(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "root.img")
	mkfs(t, img, "mvm-root")
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := ReadExt4Label(f); err != nil || got != "mvm-root" {
		t.Fatalf("got %q, %v", got, err)
	}
	full := filepath.Join(dir, "full.img")
	mkfs(t, full, "0123456789abcdef") // 16 bytes: no NUL terminator
	g, _ := os.Open(full)
	defer g.Close()
	if got, err := ReadExt4Label(g); err != nil || got != "0123456789abcdef" {
		t.Fatalf("16-byte label: got %q, %v", got, err)
	}
	for name, data := range map[string][]byte{"empty": nil, "short": make([]byte, 1100), "zeros": make([]byte, 4096)} {
		if _, err := ReadExt4Label(bytes.NewReader(data)); !errors.Is(err, ErrNotExt4) {
			t.Errorf("%s: got %v, want ErrNotExt4", name, err)
		}
	}
}

func TestWaitForLabel(t *testing.T) {
	dir := t.TempDir()
	d := blockDirs{sysClassBlock: filepath.Join(dir, "sys"), dev: filepath.Join(dir, "dev")}
	_ = os.MkdirAll(d.sysClassBlock, 0o755)
	_ = os.MkdirAll(d.dev, 0o755)
	for _, n := range []string{"vda", "vdb", "vdc"} {
		_ = os.Mkdir(filepath.Join(d.sysClassBlock, n), 0o755)
	}
	_ = os.WriteFile(filepath.Join(d.dev, "vda"), make([]byte, 8192), 0o644) // not ext4
	mkfs(t, filepath.Join(d.dev, "vdb"), "mvm-config")
	// vdc's node appears late, as devices do after module loading.
	go func() {
		time.Sleep(100 * time.Millisecond)
		tmp := filepath.Join(dir, "late")
		mkfs(t, tmp, "mvm-root")
		_ = os.Rename(tmp, filepath.Join(d.dev, "vdc"))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := d.waitForLabel(ctx, "mvm-root")
	if err != nil || got != filepath.Join(d.dev, "vdc") {
		t.Fatalf("got %q, %v", got, err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := d.waitForLabel(short, "absent"); err == nil {
		t.Fatal("found a label that does not exist")
	}
}

func FuzzReadExt4Label(f *testing.F) {
	sb := make([]byte, 2048)
	sb[1024+56], sb[1024+57] = 0x53, 0xEF
	copy(sb[1024+120:], "mvm-root")
	f.Add(sb)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		label, err := ReadExt4Label(bytes.NewReader(data))
		if err == nil && len(label) > 16 {
			t.Fatalf("label %q longer than 16 bytes", label)
		}
	})
}

func TestFindConfigDrive(t *testing.T) {
	cfg := &guestcfg.Config{Version: 1, Hostname: "a", Transport: guestcfg.Transport{Kind: guestcfg.TransportSerial}}
	rawDrive, err := guestcfg.EncodeDrive(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		devs    map[string]func(path string) // device name → writes its content
		wantDev string                       // "" = none found
		wantRaw bool
	}{
		{
			name: "raw drive beside a root disk",
			devs: map[string]func(string){
				"vda": func(p string) { mkfs(t, p, "mvm-root") },
				"vdb": func(p string) { os.WriteFile(p, append(rawDrive, make([]byte, 4096)...), 0o600) },
			},
			wantDev: "vdb", wantRaw: true,
		},
		{
			name: "ext4 drive from an older host",
			devs: map[string]func(string){
				"vda": func(p string) { os.WriteFile(p, make([]byte, 8192), 0o600) },
				"vdb": func(p string) { mkfs(t, p, "mvm-config") },
			},
			wantDev: "vdb",
		},
		{
			name: "neither",
			devs: map[string]func(string){
				"vda": func(p string) { mkfs(t, p, "mvm-root") },
				"vdb": func(p string) { os.WriteFile(p, []byte("MVM-CFG"), 0o600) }, // magic cut short
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			d := blockDirs{sysClassBlock: filepath.Join(dir, "sys"), dev: filepath.Join(dir, "dev")}
			_ = os.MkdirAll(d.dev, 0o755)
			for n, write := range tt.devs {
				_ = os.MkdirAll(filepath.Join(d.sysClassBlock, n), 0o755)
				write(filepath.Join(d.dev, n))
			}
			dev, raw, err := d.findConfigDrive()
			if tt.wantDev == "" {
				if err == nil {
					t.Fatalf("found %s (raw %v), want none", dev, raw)
				}
				return
			}
			if err != nil || dev != filepath.Join(d.dev, tt.wantDev) || raw != tt.wantRaw {
				t.Fatalf("got %q raw=%v err=%v, want %s raw=%v", dev, raw, err, tt.wantDev, tt.wantRaw)
			}
		})
	}
}
