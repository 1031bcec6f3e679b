package image

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

type arMember struct {
	name string
	data []byte
}

// makeAr writes a GNU-style ar archive (names end in '/').
func makeAr(members ...arMember) []byte {
	var b bytes.Buffer
	b.WriteString(arMagic)
	for _, m := range members {
		fmt.Fprintf(&b, "%-16s%-12d%-6d%-6d%-8o%-10d`\n", m.name, 0, 0, 0, 0o644, len(m.data))
		b.Write(m.data)
		if len(m.data)%2 == 1 {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

func readAllAr(b []byte) (map[string]string, []string, error) {
	ar, err := newArReader(bytes.NewReader(b))
	if err != nil {
		return nil, nil, err
	}
	got := map[string]string{}
	var order []string
	for {
		h, err := ar.Next()
		if err == io.EOF {
			return got, order, nil
		}
		if err != nil {
			return got, order, err
		}
		d, err := io.ReadAll(ar)
		if err != nil {
			return got, order, err
		}
		if int64(len(d)) != h.Size {
			return got, order, fmt.Errorf("member %s: read %d of %d", h.Name, len(d), h.Size)
		}
		got[h.Name] = string(d)
		order = append(order, h.Name)
	}
}

func TestArReader(t *testing.T) {
	good := makeAr(arMember{"debian-binary", []byte("2.0\n")}, arMember{"control.tar.xz/", []byte("odd")}, arMember{"data.tar.zst", []byte("0123456789")})
	bsd := []byte(arMagic + fmt.Sprintf("%-16s%-12d%-6d%-6d%-8o%-10d`\n", "#1/20", 0, 0, 0, 0o644, 23) + "a-very-long-name.txt" + "abc" + "\n")
	tests := []struct {
		name    string
		in      []byte
		want    map[string]string
		wantErr string
	}{
		{name: "deb layout", in: good, want: map[string]string{"debian-binary": "2.0\n", "control.tar.xz": "odd", "data.tar.zst": "0123456789"}},
		{name: "empty archive", in: []byte(arMagic), want: map[string]string{}},
		{name: "bsd long name", in: bsd, want: map[string]string{"a-very-long-name.txt": "abc"}},
		{name: "bad magic", in: []byte("!<arch!\n"), wantErr: "not an ar archive"},
		{name: "short magic", in: []byte("!<a"), wantErr: "read magic"},
		{name: "truncated header", in: good[:8+30], wantErr: "truncated header"},
		{name: "truncated data", in: good[:len(good)-3], wantErr: "unexpected EOF"},
		{name: "bad terminator", in: bytes.Replace(good, []byte("`\n"), []byte("`x"), 1), wantErr: "terminator"},
		{name: "negative size", in: bytes.Replace(good, []byte("4         `"), []byte("-4        `"), 1), wantErr: "bad member size"},
		{name: "huge size", in: bytes.Replace(good, []byte("4         `"), []byte("9999999999`"), 1), wantErr: "bad member size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := readAllAr(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestArSkipsUnread checks Next skips a member the caller did not read.
func TestArSkipsUnread(t *testing.T) {
	ar, err := newArReader(bytes.NewReader(makeAr(arMember{"a", []byte("xyz")}, arMember{"b", []byte("12")})))
	if err != nil {
		t.Fatal(err)
	}
	if h, err := ar.Next(); err != nil || h.Name != "a" {
		t.Fatal(h, err)
	}
	h, err := ar.Next()
	if err != nil || h.Name != "b" {
		t.Fatal(h, err)
	}
	if d, _ := io.ReadAll(ar); string(d) != "12" {
		t.Errorf("b = %q", d)
	}
	if _, err := ar.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("after last member: %v", err)
	}
}

func FuzzReadAr(f *testing.F) {
	f.Add(makeAr(arMember{"debian-binary", []byte("2.0\n")}, arMember{"data.tar.xz", []byte("x")}))
	f.Add([]byte(arMagic))
	f.Add([]byte(arMagic + fmt.Sprintf("%-16s%-12d%-6d%-6d%-8o%-10d`\n", "#1/3", 0, 0, 0, 0o644, 5) + "abcde"))
	f.Add([]byte("!<arch>\n/               0           0     0     0       4         `\nabcd"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ar, err := newArReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		total := int64(0)
		for {
			h, err := ar.Next()
			if err != nil {
				return
			}
			if h.Size < 0 {
				t.Fatalf("negative size %d", h.Size)
			}
			n, err := io.Copy(io.Discard, ar)
			if err == nil && n != h.Size {
				t.Fatalf("member %q: read %d, header says %d", h.Name, n, h.Size)
			}
			total += n
			if total > int64(len(b)) {
				t.Fatalf("read %d member bytes from a %d-byte archive", total, len(b))
			}
			if err != nil {
				return
			}
		}
	})
}
