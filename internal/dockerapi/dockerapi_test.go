package dockerapi

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

func TestSocketPath(t *testing.T) {
	tests := []struct {
		in, want string
		err      bool
	}{
		{"", DefaultSocket, false},
		{"unix:///run/d.sock", "/run/d.sock", false},
		{"unix://rel.sock", "", true},
		{"tcp://127.0.0.1:2375", "", true},
	}
	for _, tt := range tests {
		got, err := SocketPath(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("SocketPath(%q) = %q, %v", tt.in, got, err)
		}
	}
}

// A fake daemon: JSON answers decode, error answers become *Error with the
// daemon's message, and the API version is in every path.
func TestClientAgainstFakeDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/" + APIVersion + "/ok":
			w.Write([]byte(`{"Id":"abc"}`))
		case "/" + APIVersion + "/missing":
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"message":"no such thing"}`))
		default:
			w.WriteHeader(http.StatusBadRequest)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := NewAt(sock)
	var out struct {
		ID string `json:"Id"`
	}
	if err := c.Do(context.Background(), http.MethodGet, "/ok", nil, nil, "", &out); err != nil || out.ID != "abc" {
		t.Fatalf("Do: %+v %v", out, err)
	}
	err = c.Do(context.Background(), http.MethodGet, "/missing", nil, nil, "", nil)
	if !IsStatus(err, http.StatusNotFound) || !strings.Contains(err.Error(), "no such thing") {
		t.Fatalf("want 404 with message, got %v", err)
	}
	if _, err := NewAt(filepath.Join(t.TempDir(), "none.sock")).Call(context.Background(), http.MethodGet, "/ok", nil, nil, ""); err == nil || IsStatus(err, 0) {
		t.Fatalf("want a connection error, got %v", err)
	}
}
