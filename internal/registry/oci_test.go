package registry_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/registry"
	"github.com/mvm-dev/mvm/internal/registry/regtest"
)

// isolateDocker points the Docker credential store at an empty directory
// so no test reads (or is helped by) the user's own logins.
func isolateDocker(t *testing.T) string {
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", dir)
	return dir
}

func openStore(t *testing.T, addr string, o registry.Options) registry.Store {
	t.Helper()
	s, err := registry.Open(addr, o)
	if err != nil {
		t.Fatalf("Open(%s): %v", addr, err)
	}
	return s
}

func TestOCIContract(t *testing.T) {
	isolateDocker(t)
	t.Run("plain", func(t *testing.T) {
		reg := regtest.StartRegistry(t, regtest.RegistryOptions{})
		n := 0
		testContract(t, func(t *testing.T) registry.Store {
			n++
			return openStore(t, reg.Repo("tpl/c"+string(rune('a'+n))), reg.Options())
		})
	})
	t.Run("tls+auth", func(t *testing.T) {
		reg := regtest.StartRegistry(t, regtest.RegistryOptions{TLS: true, Username: "mvm", Password: "s3cret pass"})
		n := 0
		testContract(t, func(t *testing.T) registry.Store {
			n++
			return openStore(t, reg.Repo("tpl/c"+string(rune('a'+n))), reg.Options())
		})
	})
}

// A registry without the referrers API (distribution 2.8) still takes a
// manifest with a subject, and oras's fallback index makes the referrer
// discoverable by the referrers tag schema.
func TestOCISubjectWithoutReferrersAPI(t *testing.T) {
	isolateDocker(t)
	reg := regtest.StartRegistry(t, regtest.RegistryOptions{})
	s := openStore(t, reg.Repo("tpl/web"), reg.Options())
	m, _ := pushTemplate(t, s, 1)
	d, err := s.PutManifest(ctxT(t), "latest", registry.ManifestMediaType, m)
	if err != nil {
		t.Fatal(err)
	}
	_, sd := pushSignature(t, s, d)
	idx, _, err := s.GetManifest(ctxT(t), strings.Replace(d.Digest, ":", "-", 1))
	if err != nil {
		t.Fatalf("referrers tag schema index: %v", err)
	}
	var index struct {
		Manifests []struct {
			Digest       string `json:"digest"`
			ArtifactType string `json:"artifactType"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(idx, &index); err != nil || len(index.Manifests) != 1 ||
		index.Manifests[0].Digest != sd.Digest || index.Manifests[0].ArtifactType != registry.SignatureArtifactType {
		t.Errorf("referrers index = %s; want the signature %s", idx, sd.Digest)
	}
}

func TestOCIAuth(t *testing.T) {
	reg := regtest.StartRegistry(t, regtest.RegistryOptions{TLS: true, Username: "mvm", Password: "right"})
	d := desc("", []byte("anything"))

	t.Run("wrong password", func(t *testing.T) {
		isolateDocker(t)
		o := reg.Options()
		o.Password = "wrong"
		_, err := openStore(t, reg.Repo("tpl/web"), o).HasBlob(ctxT(t), d.Digest)
		if !errors.Is(err, registry.ErrUnauthorized) {
			t.Fatalf("HasBlob with a wrong password = %v; want ErrUnauthorized", err)
		}
		for _, want := range []string{"docker login " + reg.Host, "--password-stdin"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		isolateDocker(t)
		o := reg.Options()
		o.Username, o.Password = "", ""
		_, err := openStore(t, reg.Repo("tpl/web"), o).HasBlob(ctxT(t), d.Digest)
		if !errors.Is(err, registry.ErrUnauthorized) {
			t.Fatalf("HasBlob without credentials = %v; want ErrUnauthorized", err)
		}
	})
	t.Run("docker config", func(t *testing.T) {
		dir := isolateDocker(t)
		cfg := `{"auths":{"` + reg.Host + `":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("mvm:right")) + `"}}}`
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		o := reg.Options()
		o.Username, o.Password = "", ""
		s := openStore(t, reg.Repo("tpl/web"), o)
		putBlob(t, s, registry.LayerMediaType, []byte("via docker login"))
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		isolateDocker(t)
		o := reg.Options()
		o.CAFile = ""
		_, err := openStore(t, reg.Repo("tpl/web"), o).HasBlob(ctxT(t), d.Digest)
		if err == nil || errors.Is(err, registry.ErrUnavailable) || !strings.Contains(err.Error(), "CA file") {
			t.Fatalf("HasBlob against an unknown CA = %v; want an error pointing at a CA file", err)
		}
	})
}

func TestOCIStopped(t *testing.T) {
	isolateDocker(t)
	reg := regtest.StartRegistry(t, regtest.RegistryOptions{})
	s := openStore(t, reg.Repo("tpl/web"), reg.Options())
	b := []byte("before the stop")
	d := putBlob(t, s, registry.LayerMediaType, b)
	reg.Stop()
	_, err := s.HasBlob(ctxT(t), d.Digest)
	if !errors.Is(err, registry.ErrUnavailable) || !strings.Contains(err.Error(), reg.Host) {
		t.Fatalf("HasBlob on a stopped registry = %v; want ErrUnavailable naming %s", err, reg.Host)
	}
	if _, err := s.GetBlob(ctxT(t), d, 2); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("GetBlob on a stopped registry = %v; want ErrUnavailable", err)
	}
	if err := s.PutBlob(ctxT(t), d, bytes.NewReader(b)); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("PutBlob on a stopped registry = %v; want ErrUnavailable", err)
	}
}

// What we push is a plain OCI artifact that the standard clients read.
func TestOCIInterop(t *testing.T) {
	isolateDocker(t)
	reg := regtest.StartRegistry(t, regtest.RegistryOptions{})
	s := openStore(t, reg.Repo("tpl/interop"), reg.Options())
	m, layer := pushTemplate(t, s, 9)
	if _, err := s.PutManifest(ctxT(t), "v1", registry.ManifestMediaType, m); err != nil {
		t.Fatal(err)
	}
	ref := reg.Repo("tpl/interop") + ":v1"
	env := append(os.Environ(), "HOME="+t.TempDir())

	run := func(t *testing.T, bin string, args ...string) []byte {
		t.Helper()
		cmd := exec.CommandContext(ctxT(t), bin, args...)
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String())
		}
		return out
	}
	t.Run("crane", func(t *testing.T) {
		crane := regtest.Binary(t, "crane", regtest.InstallCrane)
		if got := run(t, crane, "manifest", "--insecure", ref); !bytes.Equal(got, m) {
			t.Errorf("crane manifest = %s; want %s", got, m)
		}
	})
	t.Run("oras", func(t *testing.T) {
		oras := regtest.Binary(t, "oras", regtest.InstallOras)
		if got := run(t, oras, "manifest", "fetch", "--plain-http", ref); !bytes.Equal(got, m) {
			t.Errorf("oras manifest fetch = %s; want %s", got, m)
		}
		blob := reg.Repo("tpl/interop") + "@" + layer.Digest
		got := run(t, oras, "blob", "fetch", "--plain-http", "--output", "-", blob)
		if want := randBytes(4096, 9); !bytes.Equal(got, want) {
			t.Errorf("oras blob fetch: %d bytes, not the layer pushed", len(got))
		}
	})
}

// A transfer that stops moving fails after the timeout with
// ErrUnavailable, however long the blob.
func TestOCIStall(t *testing.T) {
	isolateDocker(t)
	t.Run("upload", func(t *testing.T) {
		// A registry that takes the upload and then stops reading it:
		// the client's writes block once the socket buffers are full.
		hang := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.Method {
			case http.MethodPost:
				w.Header().Set("Location", "/v2/tpl/stall/blobs/uploads/1")
				w.WriteHeader(http.StatusAccepted)
			case http.MethodPut:
				select {
				case <-hang:
				case <-r.Context().Done():
				}
			}
		}))
		defer func() { close(hang); srv.Close() }()
		s := openStore(t, strings.TrimPrefix(srv.URL, "http://")+"/tpl/stall", registry.Options{Insecure: true, Timeout: 300 * time.Millisecond})
		d := registry.Descriptor{Digest: desc("", nil).Digest, Size: 1 << 30}
		start := time.Now()
		err := s.PutBlob(ctxT(t), d, io.LimitReader(zeros{}, d.Size))
		if !errors.Is(err, registry.ErrUnavailable) || !strings.Contains(err.Error(), "stalled") {
			t.Errorf("stalled PutBlob = %v; want ErrUnavailable saying it stalled", err)
		}
		if el := time.Since(start); el > 10*time.Second {
			t.Errorf("stalled PutBlob took %s", el)
		}
	})
	t.Run("download", func(t *testing.T) {
		blob := randBytes(64<<10, 3)
		d := desc("", blob)
		hang := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.Contains(r.URL.Path, "/blobs/") {
				return // /v2/: 200
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
			w.Header().Set("Docker-Content-Digest", d.Digest)
			w.Write(blob[:1000])
			w.(http.Flusher).Flush()
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		}))
		defer func() { close(hang); srv.Close() }()
		s := openStore(t, strings.TrimPrefix(srv.URL, "http://")+"/tpl/stall", registry.Options{Insecure: true, Timeout: 300 * time.Millisecond})
		rc, err := s.GetBlob(ctxT(t), d, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if _, err := io.ReadAll(rc); !errors.Is(err, registry.ErrUnavailable) {
			t.Errorf("reading a stalled download = %v; want ErrUnavailable", err)
		}
	})
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// A registry (or the storage it redirects to) may answer a Range with
// the whole blob, or with the wrong range.
func TestOCIRangeAnswers(t *testing.T) {
	blob := randBytes(10000, 5)
	d := desc("", blob)
	for _, c := range []struct {
		name  string
		serve func(w http.ResponseWriter, r *http.Request)
		ok    bool
	}{
		{"whole blob", func(w http.ResponseWriter, r *http.Request) { w.Write(blob) }, true},
		{"wrong range", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-9999/10000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(blob)
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.Contains(r.URL.Path, "/blobs/") {
					c.serve(w, r)
				}
			}))
			defer srv.Close()
			s := openStore(t, strings.TrimPrefix(srv.URL, "http://")+"/tpl/range", registry.Options{Insecure: true})
			rc, err := s.GetBlob(ctxT(t), d, 1234)
			if !c.ok {
				if err == nil {
					rc.Close()
					t.Fatal("GetBlob accepted a range it did not ask for")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, blob[1234:]) {
				t.Errorf("GetBlob(offset 1234) = %d bytes, %v; want the tail", len(got), err)
			}
		})
	}
}
