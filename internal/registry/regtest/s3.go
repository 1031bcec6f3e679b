package regtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/mvm-dev/mvm/internal/registry"
)

// S3 is a running versitygw (posix backend) on loopback with one bucket.
type S3 struct {
	// Endpoint is "http://127.0.0.1:PORT".
	Endpoint  string
	AccessKey string
	SecretKey string
	// Bucket exists and is empty at start.
	Bucket string
	srv    *server
}

// StartS3 runs versitygw over a temporary directory on a free loopback
// port, creates Bucket, and stops the gateway when the test ends. It skips
// the test when the binary is missing.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	bin := Binary(t, "versitygw", InstallVersitygw)
	dir := t.TempDir()
	root := filepath.Join(dir, "data")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &S3{AccessKey: "mvmtest" + randHex(t, 4), SecretKey: randHex(t, 16), Bucket: "mvm-test"}
	client := &http.Client{Timeout: 2 * time.Second}
	srv, port := start(t, "versitygw", func(port int) []string {
		return []string{bin, "--access", s.AccessKey, "--secret", s.SecretKey,
			"--port", "127.0.0.1:" + strconv.Itoa(port), "--quiet", "posix", root}
	}, dir, httpReady(client, "http", "/"))
	s.srv = srv
	host := "127.0.0.1:" + strconv.Itoa(port)
	s.Endpoint = "http://" + host

	c, err := minio.New(host, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("regtest: create bucket %s: %v", s.Bucket, err)
	}
	return s
}

// Addr is the store address of prefix in the bucket.
func (s *S3) Addr(prefix string) string { return "s3://" + s.Bucket + "/" + prefix }

// Options are what a client needs to reach this gateway.
func (s *S3) Options() registry.Options {
	return registry.Options{
		Endpoint: s.Endpoint,
		Username: s.AccessKey,
		Password: s.SecretKey,
		Region:   "us-east-1",
		Timeout:  10 * time.Second,
	}
}

// Stop ends the gateway before the test does.
func (s *S3) Stop() { s.srv.Stop() }

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
