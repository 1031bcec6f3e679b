package server

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestMergeEnv(t *testing.T) {
	got, err := mergeEnv([]string{"PATH=/bin", "HOME=/root"}, []string{"A=1", "PATH=/x"}, []string{"A=2", "B=="})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PATH=/x", "HOME=/root", "A=2", "B=="}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q want %q", got, want)
	}
	for _, bad := range []string{"NOEQ", "=v", "A=b\x00c"} {
		if _, err := mergeEnv([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestLookupUser(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	group := filepath.Join(dir, "group")
	_ = os.WriteFile(passwd, []byte("# comment\nroot:x:0:0:root:/root:/bin/sh\nbob:x:1000:100::/home/bob:/bin/sh\nbroken:x:abc:1::/:/bin/sh\n"), 0o644)
	_ = os.WriteFile(group, []byte("root:x:0:\nusers:x:100:\nwheel:x:10:bob,eve\ndocker:x:999:eve\n"), 0o644)
	cases := []struct {
		spec    string
		want    account
		wantErr bool
	}{
		{spec: "root", want: account{name: "root", uid: 0, gid: 0, groups: []uint32{0}, home: "/root"}},
		{spec: "bob", want: account{name: "bob", uid: 1000, gid: 100, groups: []uint32{100, 10}, home: "/home/bob"}},
		{spec: "1000", want: account{name: "bob", uid: 1000, gid: 100, groups: []uint32{100, 10}, home: "/home/bob"}},
		{spec: "bob:docker", want: account{name: "bob", uid: 1000, gid: 999, groups: []uint32{999, 10}, home: "/home/bob"}},
		{spec: "5000", want: account{uid: 5000, gid: 5000, groups: []uint32{5000}, home: "/"}},
		{spec: "5000:7", want: account{uid: 5000, gid: 7, groups: []uint32{7}, home: "/"}},
		{spec: "nobody", wantErr: true},
		{spec: "broken", wantErr: true},
		{spec: "bob:nogroup", wantErr: true},
		{spec: ":1", wantErr: true},
		{spec: "bob:", wantErr: true},
	}
	for _, tc := range cases {
		got, err := lookupUser(tc.spec, passwd, group)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%q: want error, got %+v", tc.spec, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.spec, err)
			continue
		}
		if got.name != tc.want.name || got.uid != tc.want.uid || got.gid != tc.want.gid ||
			got.home != tc.want.home || !slices.Equal(got.groups, tc.want.groups) {
			t.Errorf("%q: got %+v want %+v", tc.spec, *got, tc.want)
		}
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "tool")
	_ = os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	_ = os.WriteFile(filepath.Join(dir, "data"), nil, 0o644)
	if p, ok := lookPath("tool", "/nonexistent:"+dir); !ok || p != exe {
		t.Fatalf("got %q %v", p, ok)
	}
	if _, ok := lookPath("data", dir); ok {
		t.Fatal("non-executable file found")
	}
	if p, ok := lookPath("./x/y", ""); !ok || p != "./x/y" {
		t.Fatal("path with slash not used as given")
	}
}
