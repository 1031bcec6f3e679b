package regtest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/mvm-dev/mvm/internal/registry"
)

// RegistryOptions choose how the test registry is served.
type RegistryOptions struct {
	// TLS serves HTTPS with a certificate for 127.0.0.1 signed by a CA
	// made for this test (Registry.CAFile); otherwise plain HTTP.
	TLS bool
	// Username and Password, when set, require htpasswd basic auth.
	Username string
	Password string
}

// Registry is a running docker-registry on loopback.
type Registry struct {
	// Host is "127.0.0.1:PORT".
	Host string
	// CAFile is the PEM of the CA that signed the server certificate
	// (TLS only).
	CAFile   string
	Username string
	Password string
	tls      bool
	srv      *server
}

// StartRegistry runs Debian's docker-registry (distribution 2.8) on a free
// loopback port with storage in a temporary directory, and stops it when
// the test ends. It skips the test when the binary is missing.
func StartRegistry(t testing.TB, o RegistryOptions) *Registry {
	t.Helper()
	bin := Binary(t, "docker-registry", InstallDockerRegistry)
	dir := t.TempDir()
	r := &Registry{Username: o.Username, Password: o.Password, tls: o.TLS}

	var tlsYAML, authYAML string
	client := &http.Client{Timeout: 2 * time.Second}
	scheme := "http"
	if o.TLS {
		ca, cert, key := writeCerts(t, dir)
		r.CAFile = ca
		tlsYAML = fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", cert, key)
		pool := x509.NewCertPool()
		pem, _ := os.ReadFile(ca)
		pool.AppendCertsFromPEM(pem)
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
		scheme = "https"
	}
	if o.Username != "" {
		// MinCost: the registry checks the hash on every request.
		hash, err := bcrypt.GenerateFromPassword([]byte(o.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatalf("regtest: bcrypt: %v", err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(o.Username+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		authYAML = fmt.Sprintf("auth:\n  htpasswd:\n    realm: mvm-test\n    path: %s\n", htpasswd)
	}
	storage := filepath.Join(dir, "storage")
	conf := filepath.Join(dir, "config.yml")

	srv, port := start(t, "docker-registry", func(port int) []string {
		yaml := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:%d
  secret: mvm-regtest-%d
%s%s`, storage, port, port, tlsYAML, authYAML)
		if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{bin, "serve", conf}
	}, dir, httpReady(client, scheme, "/v2/"))
	r.srv = srv
	r.Host = "127.0.0.1:" + strconv.Itoa(port)
	return r
}

// Repo is the store address of repository name on this registry.
func (r *Registry) Repo(name string) string { return r.Host + "/" + name }

// Options are what a client needs to reach this registry: the CA for
// TLS, plain HTTP otherwise, and the credentials when auth is on.
func (r *Registry) Options() registry.Options {
	return registry.Options{
		Username: r.Username,
		Password: r.Password,
		Insecure: !r.tls,
		CAFile:   r.CAFile,
		Timeout:  10 * time.Second,
	}
}

// Stop ends the registry before the test does.
func (r *Registry) Stop() { r.srv.Stop() }
