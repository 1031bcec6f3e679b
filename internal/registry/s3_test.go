package registry_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/mvm-dev/mvm/internal/registry"
	"github.com/mvm-dev/mvm/internal/registry/regtest"
)

func TestS3Contract(t *testing.T) {
	s3 := regtest.StartS3(t)
	n := 0
	testContract(t, func(t *testing.T) registry.Store {
		n++
		return openStore(t, s3.Addr("tpl/c"+string(rune('a'+n))), s3.Options())
	})
}

// rawClient reads the bucket behind the store's back.
func rawClient(t *testing.T, s3 *regtest.S3) *minio.Client {
	c, err := minio.New(strings.TrimPrefix(s3.Endpoint, "http://"), &minio.Options{
		Creds:        credentials.NewStaticV4(s3.AccessKey, s3.SecretKey, ""),
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The bucket is laid out like a registry, with manifests byte for byte.
func TestS3Layout(t *testing.T) {
	s3 := regtest.StartS3(t)
	s := openStore(t, s3.Addr("team/tpl"), s3.Options())
	m, layer := pushTemplate(t, s, 1)
	d, err := s.PutManifest(ctxT(t), "v1", registry.ManifestMediaType, m)
	if err != nil {
		t.Fatal(err)
	}
	c := rawClient(t, s3)
	var keys []string
	for obj := range c.ListObjects(ctxT(t), s3.Bucket, minio.ListObjectsOptions{Prefix: "team/tpl/", Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		keys = append(keys, obj.Key)
	}
	hexOf := func(dg string) string { return strings.TrimPrefix(dg, "sha256:") }
	for _, want := range []string{
		"team/tpl/blobs/sha256/" + hexOf(layer.Digest),
		"team/tpl/manifests/v1",
		"team/tpl/manifests/sha256/" + hexOf(d.Digest),
	} {
		if !slices.Contains(keys, want) {
			t.Errorf("no object %s in %v", want, keys)
		}
	}
	for _, key := range []string{"team/tpl/manifests/v1", "team/tpl/manifests/sha256/" + hexOf(d.Digest)} {
		obj, err := c.GetObject(ctxT(t), s3.Bucket, key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(obj)
		obj.Close()
		if err != nil || !bytes.Equal(b, m) {
			t.Errorf("%s = %q, %v; want the manifest verbatim", key, b, err)
		}
		if st, err := c.StatObject(ctxT(t), s3.Bucket, key, minio.StatObjectOptions{}); err != nil || st.ContentType != registry.ManifestMediaType {
			t.Errorf("%s content type = %q, %v; want %s", key, st.ContentType, err, registry.ManifestMediaType)
		}
	}
}

// Blobs over the single-PUT size go multipart; a wrong digest there is
// caught before the upload completes.
func TestS3Multipart(t *testing.T) {
	defer registry.SetS3Limits(1<<20, 5<<20)()
	s3 := regtest.StartS3(t)
	s := openStore(t, s3.Addr("big"), s3.Options())
	b := randBytes(11<<20+5, 7)
	d := putBlob(t, s, registry.LayerMediaType, b)
	if got := readBlob(t, s, d, 6<<20); !bytes.Equal(got, b[6<<20:]) {
		t.Errorf("resumed multipart blob: %d bytes, not the tail pushed", len(got))
	}

	bad := registry.Descriptor{MediaType: registry.LayerMediaType, Digest: desc("", []byte("other")).Digest, Size: int64(len(b))}
	if err := s.PutBlob(ctxT(t), bad, bytes.NewReader(b)); err == nil || !strings.Contains(err.Error(), "hashes to") {
		t.Errorf("multipart PutBlob with a wrong digest = %v; want refused", err)
	}
	if ok, err := s.HasBlob(ctxT(t), bad.Digest); err != nil || ok {
		t.Errorf("after a refused multipart upload HasBlob = %v, %v; want false, nil", ok, err)
	}
}

func TestS3Auth(t *testing.T) {
	s3 := regtest.StartS3(t)
	d := desc("", []byte("anything"))
	for _, c := range []struct {
		name string
		edit func(*registry.Options)
	}{
		{"wrong secret", func(o *registry.Options) { o.Password = "wrong" }},
		{"unknown access key", func(o *registry.Options) { o.Username = "nobody" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := s3.Options()
			c.edit(&o)
			_, err := openStore(t, s3.Addr("tpl"), o).HasBlob(ctxT(t), d.Digest)
			if !errors.Is(err, registry.ErrUnauthorized) {
				t.Fatalf("HasBlob = %v; want ErrUnauthorized", err)
			}
			if !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
				t.Errorf("error %q does not say how to give credentials", err)
			}
			err = openStore(t, s3.Addr("tpl"), o).PutBlob(ctxT(t), d, strings.NewReader("anything"))
			if !errors.Is(err, registry.ErrUnauthorized) {
				t.Errorf("PutBlob = %v; want ErrUnauthorized", err)
			}
		})
	}
	t.Run("environment", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", s3.AccessKey)
		t.Setenv("AWS_SECRET_ACCESS_KEY", s3.SecretKey)
		t.Setenv("MVM_S3_ENDPOINT", s3.Endpoint)
		s, err := registry.Open(s3.Addr("env"), registry.Options{})
		if err != nil {
			t.Fatal(err)
		}
		putBlob(t, s, registry.LayerMediaType, []byte("via the environment"))
	})
}

func TestS3NoBucket(t *testing.T) {
	s3 := regtest.StartS3(t)
	s := openStore(t, "s3://no-such-bucket/p", s3.Options())
	err := s.PutBlob(ctxT(t), desc("", []byte("x")), strings.NewReader("x"))
	if !errors.Is(err, registry.ErrNotFound) || !strings.Contains(err.Error(), "no-such-bucket") {
		t.Errorf("PutBlob into a missing bucket = %v; want ErrNotFound naming it", err)
	}
}

func TestS3Stopped(t *testing.T) {
	s3 := regtest.StartS3(t)
	s := openStore(t, s3.Addr("tpl"), s3.Options())
	b := []byte("before the stop")
	d := putBlob(t, s, registry.LayerMediaType, b)
	s3.Stop()
	host := strings.TrimPrefix(s3.Endpoint, "http://")
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	_, err := s.HasBlob(ctx, d.Digest)
	if !errors.Is(err, registry.ErrUnavailable) || !strings.Contains(err.Error(), host) {
		t.Fatalf("HasBlob on a stopped gateway = %v; want ErrUnavailable naming %s", err, host)
	}
	if _, err := s.GetBlob(ctx, d, 3); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("GetBlob on a stopped gateway = %v; want ErrUnavailable", err)
	}
	if err := s.PutBlob(ctx, d, bytes.NewReader(b)); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("PutBlob on a stopped gateway = %v; want ErrUnavailable", err)
	}
}
