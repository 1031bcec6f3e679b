package registry_test

import (
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/registry"
)

func TestSignatureTag(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	if got, want := registry.SignatureTag(d), "sha256-"+strings.Repeat("ab", 32)+".sig"; got != want {
		t.Errorf("SignatureTag = %q; want %q", got, want)
	}
}

// Open checks addresses and options without any traffic.
func TestOpen(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	for _, env := range []string{"MVM_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"} {
		t.Setenv(env, "")
	}
	for _, c := range []struct {
		addr    string
		o       registry.Options
		str     string // want String(), or
		wantErr string // a substring of the error
	}{
		{addr: "localhost:5000/tpl/web", str: "localhost:5000/tpl/web"},
		{addr: "registry.example.com/tpl/web", str: "registry.example.com/tpl/web"},
		{addr: "127.0.0.1:5000/web", o: registry.Options{Insecure: true}, str: "127.0.0.1:5000/web"},
		{addr: "localhost/web", o: registry.Options{Insecure: true}, str: "localhost/web"},
		{addr: "[::1]:5000/web", o: registry.Options{Insecure: true}, str: "[::1]:5000/web"},
		{addr: "registry.example.com/tpl/web", o: registry.Options{Insecure: true}, wantErr: "only for a loopback registry"},
		{addr: "10.0.0.1:5000/web", o: registry.Options{Insecure: true}, wantErr: "only for a loopback registry"},
		{addr: "localhost.example.com/web", o: registry.Options{Insecure: true}, wantErr: "only for a loopback registry"},
		{addr: "tpl/web", wantErr: "no registry host"},
		{addr: "localhost:5000/tpl/web:v1", wantErr: "names a tag or digest"},
		{addr: "localhost:5000/Tpl", wantErr: "want HOST[:PORT]/NAME"},
		{addr: "localhost:5000", wantErr: "want HOST[:PORT]/NAME"},
		{addr: "https://localhost:5000/web", wantErr: "only s3:// URLs take a scheme"},
		{addr: "localhost:5000/web", o: registry.Options{Password: "x"}, wantErr: "needs a username"},
		{addr: "localhost:5000/web", o: registry.Options{CAFile: "/nonexistent/ca.pem"}, wantErr: "CA file"},

		{addr: "s3://bucket/some/prefix/", str: "s3://bucket/some/prefix"},
		{addr: "s3://bucket", str: "s3://bucket"},
		{addr: "s3://bucket/p", o: registry.Options{Endpoint: "http://127.0.0.1:9000"}, str: "s3://bucket/p"},
		{addr: "s3://bucket/p", o: registry.Options{Endpoint: "minio.example.com:9000"}, str: "s3://bucket/p"},
		{addr: "s3://bucket/p", o: registry.Options{Endpoint: "http://minio.example.com:9000"}, wantErr: "plain HTTP is allowed only for a loopback"},
		{addr: "s3://bucket/p", o: registry.Options{Endpoint: "ftp://127.0.0.1"}, wantErr: "want http(s)://"},
		{addr: "s3://Bad_Bucket/p", wantErr: "bucket"},
		{addr: "s3://bucket/a/../b", wantErr: "'..'"},
		{addr: "s3://bucket/a//b", wantErr: "empty"},
	} {
		s, err := registry.Open(c.addr, c.o)
		switch {
		case c.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("Open(%q, %+v) = %v; want an error with %q", c.addr, c.o, err, c.wantErr)
			}
		case err != nil:
			t.Errorf("Open(%q, %+v): %v", c.addr, c.o, err)
		case s.String() != c.str:
			t.Errorf("Open(%q).String() = %q; want %q", c.addr, s.String(), c.str)
		}
	}
}

func TestOpenS3EndpointFromEnv(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL", "")
	t.Setenv("MVM_S3_ENDPOINT", "http://minio.example.com")
	if _, err := registry.Open("s3://bucket/p", registry.Options{}); err == nil || !strings.Contains(err.Error(), "minio.example.com") {
		t.Errorf("Open with MVM_S3_ENDPOINT over plain HTTP to a remote host = %v; want refused", err)
	}
}
