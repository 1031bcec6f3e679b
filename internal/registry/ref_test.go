package registry

import "testing"

func TestSplitRef(t *testing.T) {
	d := "sha256:" + "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"[:64]
	for _, c := range []struct {
		ref, addr, tag string
		bad            bool
	}{
		{ref: "localhost:5000/tpl/web:v1", addr: "localhost:5000/tpl/web", tag: "v1"},
		{ref: "localhost:5000/tpl/web", addr: "localhost:5000/tpl/web", tag: "latest"},
		{ref: "registry.example.com/web@" + d, addr: "registry.example.com/web", tag: d},
		{ref: "s3://bucket/team/web:v2", addr: "s3://bucket/team/web", tag: "v2"},
		{ref: "s3://bucket/web", addr: "s3://bucket/web", tag: "latest"},
		{ref: "s3://bucket", addr: "s3://bucket", tag: "latest"},
		{ref: "localhost:5000", bad: true},
		{ref: "host/web:", bad: true},
		{ref: "host/web:-x", bad: true},
		{ref: "host/web@sha256:12", bad: true},
		{ref: "host/web latest", bad: true},
		{ref: "", bad: true},
	} {
		addr, tag, err := SplitRef(c.ref)
		if c.bad {
			if err == nil {
				t.Errorf("SplitRef(%q) = %q, %q; want an error", c.ref, addr, tag)
			}
			continue
		}
		if err != nil || addr != c.addr || tag != c.tag {
			t.Errorf("SplitRef(%q) = %q, %q, %v; want %q, %q", c.ref, addr, tag, err, c.addr, c.tag)
		}
	}
}
