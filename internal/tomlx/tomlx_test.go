package tomlx

import (
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	type cfg struct {
		A int `toml:"a"`
		T struct {
			B string `toml:"b"`
		} `toml:"t"`
	}
	tests := []struct {
		name, in string
		want     []string
	}{
		{"ok", "a = 1\n[t]\nb = \"x\"\n", nil},
		{"unknown top", "a = 1\nzz = 2\n", []string{"f.toml:2", `unknown key "zz"`, "see docs"}},
		{"unknown nested", "[t]\nb = \"x\"\nc = 1\n", []string{"f.toml:3", `"t.c"`}},
		{"wrong type", "\na = \"one\"\n", []string{"f.toml:2", `key "a"`}},
		{"syntax", "a = = 1\n", []string{"f.toml:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c cfg
			err := Decode("f.toml", []byte(tt.in), &c, "see docs")
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("want error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
