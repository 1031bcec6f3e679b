package image

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// cpioRecord is one member as parsed back by readCPIO.
type cpioRecord struct {
	name             string
	ino, mode, nlink uint32
	uid, gid, mtime  uint32
	rmajor, rminor   uint32
	data             []byte
}

// readCPIO is a minimal newc reader for round-trip tests.
func readCPIO(t *testing.T, b []byte) []cpioRecord {
	t.Helper()
	var out []cpioRecord
	off := 0
	align := func() { off = (off + 3) &^ 3 }
	for {
		if off+110 > len(b) {
			t.Fatalf("truncated header at %d", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("field %d at %d: %v", i, off, err)
			}
			return uint32(v)
		}
		r := cpioRecord{ino: field(0), mode: field(1), uid: field(2), gid: field(3), nlink: field(4),
			mtime: field(5), rmajor: field(9), rminor: field(10)}
		size, namesize := int(field(6)), int(field(11))
		off += 110
		r.name = string(b[off : off+namesize-1])
		if b[off+namesize-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", r.name)
		}
		off += namesize
		align()
		r.data = b[off : off+size]
		off += size
		align()
		if r.name == cpioTrailer {
			if off != len(b) {
				t.Fatalf("%d bytes after trailer", len(b)-off)
			}
			return out
		}
		out = append(out, r)
	}
}

func testArchive(t *testing.T, withDev bool) []byte {
	t.Helper()
	src := filepath.Join(t.TempDir(), "big")
	big := bytes.Repeat([]byte("0123456789abcdef"), 4097) // not a multiple of 4 after the odd byte below
	big = append(big, 'x')
	if err := os.WriteFile(src, big, 0o600); err != nil {
		t.Fatal(err)
	}
	a := newCPIO()
	entries := []cpioEntry{
		{Name: "init", Type: cpioRegular, Perm: 0o755, Source: src},
		{Name: "etc/mvm/modules", Type: cpioRegular, Perm: 0o644, Data: []byte("a.ko\nb.ko\n")},
		{Name: "/tmp", Type: cpioDir, Perm: 0o1777},
		{Name: "bin/sh", Type: cpioSymlink, Perm: 0o777, Target: "busybox"},
		{Name: "empty", Type: cpioRegular, Perm: 0o600, UID: 7, GID: 9},
	}
	if withDev {
		entries = append(entries, cpioEntry{Name: "dev/console", Type: cpioCharDev, Perm: 0o600, Major: 5, Minor: 1})
	}
	for _, e := range entries {
		if err := a.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	n, err := a.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo reported %d bytes, wrote %d", n, buf.Len())
	}
	return buf.Bytes()
}

func TestCPIORoundTrip(t *testing.T) {
	b := testArchive(t, true)
	recs := readCPIO(t, b)
	var names []string
	byName := map[string]cpioRecord{}
	inos := map[uint32]bool{}
	for _, r := range recs {
		names = append(names, r.name)
		byName[r.name] = r
		if r.mtime != 0 {
			t.Errorf("%s: mtime %d, want 0", r.name, r.mtime)
		}
		if inos[r.ino] {
			t.Errorf("%s: duplicate inode %d", r.name, r.ino)
		}
		inos[r.ino] = true
	}
	want := "bin bin/sh dev dev/console empty etc etc/mvm etc/mvm/modules init tmp"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("entries:\n got %s\nwant %s", got, want)
	}
	tests := []struct {
		name   string
		mode   uint32
		data   string
		uid    uint32
		rmajor uint32
		rminor uint32
	}{
		{"bin", 0o40755, "", 0, 0, 0},
		{"tmp", 0o41777, "", 0, 0, 0},
		{"bin/sh", 0o120777, "busybox", 0, 0, 0},
		{"etc/mvm/modules", 0o100644, "a.ko\nb.ko\n", 0, 0, 0},
		{"empty", 0o100600, "", 7, 0, 0},
		{"dev/console", 0o20600, "", 0, 5, 1},
	}
	for _, tt := range tests {
		r := byName[tt.name]
		if r.mode != tt.mode || string(r.data) != tt.data || r.uid != tt.uid || r.rmajor != tt.rmajor || r.rminor != tt.rminor {
			t.Errorf("%s: mode %o data %q uid %d rdev %d:%d; want %o %q %d %d:%d",
				tt.name, r.mode, r.data, r.uid, r.rmajor, r.rminor, tt.mode, tt.data, tt.uid, tt.rmajor, tt.rminor)
		}
	}
	if got := len(byName["init"].data); got != 16*4097+1 {
		t.Errorf("init: %d bytes", got)
	}
	if b2 := testArchive(t, true); !bytes.Equal(b, b2) {
		t.Error("same entries gave different archives")
	}
}

func TestCPIOWithSystemCpio(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("needs the cpio tool (package cpio)")
	}
	arch := filepath.Join(t.TempDir(), "a.cpio")
	if err := os.WriteFile(arch, testArchive(t, true), 0o644); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(arch)
	defer f.Close()
	cmd := exec.Command(cpio, "-t", "--quiet")
	cmd.Stdin = f
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	want := "bin bin/sh dev dev/console empty etc etc/mvm etc/mvm/modules init tmp"
	if got := strings.Join(strings.Fields(string(out)), " "); got != want {
		t.Fatalf("cpio -t listed %q", got)
	}

	// Extract an archive without device nodes (mknod needs root).
	plain := filepath.Join(t.TempDir(), "b.cpio")
	if err := os.WriteFile(plain, testArchive(t, false), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	g, _ := os.Open(plain)
	defer g.Close()
	cmd = exec.Command(cpio, "-i", "-d", "--quiet", "--no-absolute-filenames")
	cmd.Dir, cmd.Stdin = dst, g
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	if l, err := os.Readlink(filepath.Join(dst, "bin/sh")); err != nil || l != "busybox" {
		t.Errorf("bin/sh -> %q, %v", l, err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "etc/mvm/modules")); err != nil || string(b) != "a.ko\nb.ko\n" {
		t.Errorf("modules list %q, %v", b, err)
	}
	fi, err := os.Stat(filepath.Join(dst, "init"))
	if err != nil || fi.Size() != 16*4097+1 || fi.Mode().Perm() != 0o755 {
		t.Errorf("init: %v %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "tmp")); err != nil || fmt.Sprintf("%v", fi.Mode()) != "dtrwxrwxrwx" {
		t.Errorf("tmp: %v %v", fi.Mode(), err)
	}
}

func TestCPIOAddErrors(t *testing.T) {
	tests := []struct {
		name  string
		first cpioEntry
		e     cpioEntry
	}{
		{"empty name", cpioEntry{Name: "x", Type: cpioDir}, cpioEntry{Name: "/", Type: cpioDir}},
		{"duplicate file", cpioEntry{Name: "a", Type: cpioRegular}, cpioEntry{Name: "a", Type: cpioRegular}},
		{"parent is file", cpioEntry{Name: "a", Type: cpioRegular}, cpioEntry{Name: "a/b", Type: cpioRegular}},
		{"bad type", cpioEntry{Name: "x", Type: cpioDir}, cpioEntry{Name: "y", Type: 0o060000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newCPIO()
			if err := a.Add(tt.first); err != nil {
				t.Fatal(err)
			}
			if err := a.Add(tt.e); err == nil {
				t.Fatal("Add succeeded")
			}
		})
	}
}
