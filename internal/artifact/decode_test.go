package artifact

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/registry"
)

func digestN(n byte) string { return "sha256:" + strings.Repeat(string("0123456789abcdef"[n%16]), 64) }

// goodConfig is a small valid config: two files, one of two chunks.
func goodConfig() Config {
	return Config{
		Version:  ConfigVersion,
		Template: json.RawMessage(`{"name":"web"}`),
		Files: []File{
			{Name: "image/vmlinuz", Size: 10, Mode: 0o644, SHA256: strings.Repeat("a", 64), Chunks: []Chunk{
				{Index: 0, Offset: 0, Size: 6, Digest: digestN(1), Data: [][2]int64{{0, 6}}},
				{Index: 1, Offset: 6, Size: 4, Digest: digestN(2), Data: [][2]int64{{0, 1}, {3, 1}}},
			}},
			{Name: "snapshot/empty", Size: 0, Mode: 0o600, SHA256: strings.Repeat("e", 64), Chunks: []Chunk{}},
		},
	}
}

// goodManifest matches goodConfig.
func goodManifest(t testing.TB, c *Config) []byte {
	t.Helper()
	cb, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	m := Manifest{
		SchemaVersion: 2,
		MediaType:     registry.ManifestMediaType,
		ArtifactType:  registry.ArtifactType,
		Config:        Descriptor{MediaType: registry.ConfigMediaType, Digest: digestOf(cb), Size: int64(len(cb))},
		Annotations:   map[string]string{AnnotationTemplate: "web"},
	}
	for i := range c.Files {
		f := &c.Files[i]
		for j := range f.Chunks {
			ch := &f.Chunks[j]
			m.Layers = append(m.Layers, Descriptor{MediaType: registry.LayerMediaType, Digest: ch.Digest, Size: ch.DataSize(), Annotations: layerAnnotations(f, ch, false)})
		}
	}
	b, err := json.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		raw  func(b []byte) []byte // applied to the encoding instead
		ok   bool
	}{
		{name: "valid", ok: true},
		{name: "no template", edit: func(c *Config) { c.Template = nil }, ok: true},
		{name: "version", edit: func(c *Config) { c.Version = 3 }},
		{name: "version 1 (no extents)", edit: func(c *Config) { c.Version = 1 }},
		{name: "all-zero chunk", edit: func(c *Config) { c.Files[0].Chunks[1].Data = [][2]int64{} }, ok: true},
		{name: "no extents", edit: func(c *Config) { c.Files[0].Chunks[1].Data = nil }},
		{name: "empty extent", edit: func(c *Config) { c.Files[0].Chunks[1].Data = [][2]int64{{0, 0}} }},
		{name: "negative extent", edit: func(c *Config) { c.Files[0].Chunks[1].Data = [][2]int64{{-1, 2}} }},
		{name: "extents touch", edit: func(c *Config) { c.Files[0].Chunks[1].Data = [][2]int64{{0, 1}, {1, 1}} }},
		{name: "extents overlap", edit: func(c *Config) { c.Files[0].Chunks[1].Data = [][2]int64{{0, 2}, {1, 2}} }},
		{name: "extents out of order", edit: func(c *Config) { c.Files[0].Chunks[1].Data = [][2]int64{{3, 1}, {0, 1}} }},
		{name: "extent past chunk", edit: func(c *Config) { c.Files[0].Chunks[1].Data = [][2]int64{{3, 2}} }},
		{name: "extent overflow", edit: func(c *Config) { c.Files[0].Chunks[1].Data = [][2]int64{{3, 1<<63 - 1}} }},
		{name: "too many extents", edit: func(c *Config) {
			c.Files[0].Size = 6 + 2*(MaxExtents+1)
			c.Files[0].Chunks[1].Size = 2 * (MaxExtents + 1)
			c.Files[0].Chunks[1].Data = nil
			for i := range MaxExtents + 1 {
				c.Files[0].Chunks[1].Data = append(c.Files[0].Chunks[1].Data, [2]int64{int64(2 * i), 1})
			}
		}},
		{name: "no files", edit: func(c *Config) { c.Files = nil }},
		{name: "dot dot", edit: func(c *Config) { c.Files[0].Name = "../vmlinuz" }},
		{name: "inner dot dot", edit: func(c *Config) { c.Files[0].Name = "image/../../x" }},
		{name: "dot segment", edit: func(c *Config) { c.Files[0].Name = "./image" }},
		{name: "absolute", edit: func(c *Config) { c.Files[0].Name = "/etc/passwd" }},
		{name: "empty segment", edit: func(c *Config) { c.Files[0].Name = "image//vmlinuz" }},
		{name: "trailing slash", edit: func(c *Config) { c.Files[0].Name = "image/" }},
		{name: "empty name", edit: func(c *Config) { c.Files[0].Name = "" }},
		{name: "backslash", edit: func(c *Config) { c.Files[0].Name = `image\vmlinuz` }},
		{name: "nul", edit: func(c *Config) { c.Files[0].Name = "image/vm\x00linuz" }},
		{name: "space", edit: func(c *Config) { c.Files[0].Name = "image/vm linuz" }},
		{name: "unicode", edit: func(c *Config) { c.Files[0].Name = "image/vmlinüz" }},
		{name: "too long", edit: func(c *Config) { c.Files[0].Name = strings.Repeat("a/", 100) + "b" }},
		{name: "long segment", edit: func(c *Config) { c.Files[0].Name = strings.Repeat("a", 129) }},
		{name: "duplicate", edit: func(c *Config) { c.Files[1].Name = c.Files[0].Name }},
		{name: "unsorted", edit: func(c *Config) { c.Files[0], c.Files[1] = c.Files[1], c.Files[0] }},
		{name: "case clash", edit: func(c *Config) { c.Files[0].Name = "IMAGE/vmlinuz"; c.Files[1].Name = "image/vmlinuz" }},
		{name: "file is a directory", edit: func(c *Config) { c.Files[1].Name = "image/vmlinuz/x" }},
		{name: "exec mode", edit: func(c *Config) { c.Files[0].Mode = 0o755 }},
		{name: "setuid", edit: func(c *Config) { c.Files[0].Mode = 0o4644 }},
		{name: "mode type bits", edit: func(c *Config) { c.Files[0].Mode = 0o644 | 1<<31 }},
		{name: "short sha", edit: func(c *Config) { c.Files[0].SHA256 = "abc" }},
		{name: "upper sha", edit: func(c *Config) { c.Files[0].SHA256 = strings.Repeat("A", 64) }},
		{name: "negative size", edit: func(c *Config) { c.Files[1].Size = -1 }},
		{name: "huge size", edit: func(c *Config) { c.Files[1].Size = MaxFileSize + 1 }},
		{name: "chunk gap", edit: func(c *Config) { c.Files[0].Chunks[1].Offset = 7 }},
		{name: "chunk index", edit: func(c *Config) { c.Files[0].Chunks[1].Index = 5 }},
		{name: "chunk short", edit: func(c *Config) { c.Files[0].Size = 11 }},
		{name: "chunk past end", edit: func(c *Config) { c.Files[0].Size = 8 }},
		{name: "chunk empty", edit: func(c *Config) {
			c.Files[0].Chunks = append(c.Files[0].Chunks, Chunk{Index: 2, Offset: 10, Size: 0, Digest: digestN(3)})
		}},
		{name: "chunk too big", edit: func(c *Config) {
			c.Files[0].Size = MaxChunkSize + 7
			c.Files[0].Chunks[1].Size = MaxChunkSize + 1
		}},
		{name: "chunk digest algorithm", edit: func(c *Config) { c.Files[0].Chunks[0].Digest = "sha512:" + strings.Repeat("a", 64) }},
		{name: "chunk digest path", edit: func(c *Config) { c.Files[0].Chunks[0].Digest = "sha256:../../" + strings.Repeat("a", 58) }},
		{name: "too many files", edit: func(c *Config) {
			c.Files = nil
			for i := range MaxFiles + 1 {
				c.Files = append(c.Files, File{Name: fmt.Sprintf("f%05d", i), Mode: 0o644, SHA256: strings.Repeat("a", 64), Chunks: []Chunk{}})
			}
		}},
		{name: "unknown field", raw: func(b []byte) []byte {
			return bytes.Replace(b, []byte(`{"version":2`), []byte(`{"version":2,"extra":true`), 1)
		}},
		{name: "duplicate key", raw: func(b []byte) []byte {
			return bytes.Replace(b, []byte(`{"version":2`), []byte(`{"version":2,"version":2`), 1)
		}},
		{name: "case-folded key", raw: func(b []byte) []byte { return bytes.Replace(b, []byte(`"version"`), []byte(`"VERSION"`), 1) }},
		{name: "whitespace", raw: func(b []byte) []byte { return append([]byte(" "), b...) }},
		{name: "trailing data", raw: func(b []byte) []byte { return append(b, []byte(`{}`)...) }},
		{name: "null", raw: func([]byte) []byte { return []byte("null") }},
		{name: "too large", raw: func(b []byte) []byte { return append(b, bytes.Repeat([]byte(" "), MaxConfigSize)...) }},
		{name: "bad template", raw: func(b []byte) []byte {
			return bytes.Replace(b, []byte(`{"name":"web"}`), []byte(`{"name":"web"]`), 1)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := goodConfig()
			if tc.edit != nil {
				tc.edit(&c)
			}
			b, err := json.Marshal(&c)
			if err != nil {
				t.Fatal(err)
			}
			if tc.raw != nil {
				b = tc.raw(b)
			}
			_, err = DecodeConfig(b)
			if tc.ok && err != nil {
				t.Fatalf("DecodeConfig: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrInvalid) {
				t.Fatalf("DecodeConfig: %v, want ErrInvalid", err)
			}
		})
	}
}

func TestDecodeManifest(t *testing.T) {
	c := goodConfig()
	good := goodManifest(t, &c)
	edit := func(f func(m *Manifest)) func([]byte) []byte {
		return func(b []byte) []byte {
			var m Manifest
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			f(&m)
			out, err := json.Marshal(&m)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
	}
	for _, tc := range []struct {
		name   string
		change func([]byte) []byte
		ok     bool // decodes
		fits   bool // and agrees with the config
	}{
		{name: "valid", ok: true, fits: true},
		{name: "schema version", change: edit(func(m *Manifest) { m.SchemaVersion = 1 })},
		{name: "media type", change: edit(func(m *Manifest) { m.MediaType = "application/vnd.docker.distribution.manifest.v2+json" })},
		{name: "artifact type", change: edit(func(m *Manifest) { m.ArtifactType = "application/vnd.other" })},
		{name: "config media type", change: edit(func(m *Manifest) { m.Config.MediaType = "application/json" })},
		{name: "config too big", change: edit(func(m *Manifest) { m.Config.Size = MaxConfigSize + 1 })},
		{name: "config digest", change: edit(func(m *Manifest) { m.Config.Digest = "sha256:xyz" })},
		{name: "no layers", change: edit(func(m *Manifest) { m.Layers = nil })},
		{name: "layer media type", change: edit(func(m *Manifest) { m.Layers[0].MediaType = "application/vnd.oci.image.layer.v1.tar" })},
		{name: "layer size", change: edit(func(m *Manifest) { m.Layers[0].Size = MaxChunkSize + 1 })},
		{name: "layer zero size", change: edit(func(m *Manifest) { m.Layers[0].Size = 0 })},
		{name: "same digest two sizes", change: edit(func(m *Manifest) { m.Layers[1].Digest = m.Layers[0].Digest })},
		{name: "unknown field", change: func(b []byte) []byte {
			return bytes.Replace(b, []byte(`{"schemaVersion":2`), []byte(`{"schemaVersion":2,"subject":null`), 1)
		}},
		{name: "indented", change: func(b []byte) []byte {
			var out bytes.Buffer
			json.Indent(&out, b, "", "  ")
			return out.Bytes()
		}},
		{name: "too large", change: func(b []byte) []byte { return append(b, bytes.Repeat([]byte(" "), MaxManifestSize)...) }},
		// Decodes, but does not describe the config.
		{name: "layer swapped", ok: true, change: edit(func(m *Manifest) { m.Layers[0], m.Layers[1] = m.Layers[1], m.Layers[0] })},
		{name: "layer missing", ok: true, change: edit(func(m *Manifest) { m.Layers = m.Layers[:1] })},
		{name: "title", ok: true, change: edit(func(m *Manifest) { m.Layers[0].Annotations[AnnotationTitle] = "../../x" })},
		{name: "offset annotation", ok: true, change: edit(func(m *Manifest) { m.Layers[1].Annotations[AnnotationOffset] = "0" })},
		{name: "extra annotation", ok: true, change: edit(func(m *Manifest) { m.Layers[1].Annotations["x"] = "y" })},
		{name: "raw size differs", ok: true, change: edit(func(m *Manifest) { m.Layers[1].Size = 5 })},
		{name: "zstd not smaller", ok: true, change: edit(func(m *Manifest) { m.Layers[1].MediaType = registry.LayerZstdMediaType })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := good
			if tc.change != nil {
				b = tc.change(bytes.Clone(good))
			}
			m, err := DecodeManifest(b)
			if !tc.ok {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("DecodeManifest: %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeManifest: %v", err)
			}
			_, err = checkLayers(m, &c)
			if tc.fits && err != nil {
				t.Fatalf("checkLayers: %v", err)
			}
			if !tc.fits && !errors.Is(err, ErrInvalid) {
				t.Fatalf("checkLayers: %v, want ErrInvalid", err)
			}
		})
	}
}

func FuzzDecodeConfig(f *testing.F) {
	c := goodConfig()
	b, _ := json.Marshal(&c)
	f.Add(b)
	f.Add([]byte(`{"version":1,"files":[]}`))
	f.Add([]byte(`{"version":2,"files":[{"name":"a","size":1,"mode":420,"sha256":"","chunks":[{"index":0,"offset":0,"size":1,"digest":"","data":[[0,1]]}]}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeConfig(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		// What is accepted is canonical, valid and safe to lay out.
		re, err := json.Marshal(c)
		if err != nil || !bytes.Equal(re, b) {
			t.Fatalf("accepted non-canonical bytes")
		}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		for _, f := range c.Files {
			if strings.Contains(f.Name, "..") && strings.Contains("/"+f.Name+"/", "/../") || strings.HasPrefix(f.Name, "/") {
				t.Fatalf("accepted name %q", f.Name)
			}
		}
	})
}

func FuzzDecodeManifest(f *testing.F) {
	c := goodConfig()
	good := goodManifest(f, &c)
	f.Add(good)
	f.Add(bytes.Replace(good, []byte(`"size":6`), []byte(`"size":7`), 1))
	f.Add([]byte(`{"schemaVersion":2}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		re, err := json.Marshal(m)
		if err != nil || !bytes.Equal(re, b) {
			t.Fatalf("accepted non-canonical bytes")
		}
		if len(m.Layers) == 0 || len(m.Layers) > MaxChunks {
			t.Fatalf("accepted %d layers", len(m.Layers))
		}
		// The cross-check must not panic on anything the decoder accepts.
		layers, err := checkLayers(m, &c)
		if err == nil && len(layers) != len(c.Files) {
			t.Fatalf("checkLayers returned %d files", len(layers))
		}
	})
}
