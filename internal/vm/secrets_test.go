package vm

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mvm-dev/mvm/internal/agent/client"
	"github.com/mvm-dev/mvm/internal/agent/proto"
	"github.com/mvm-dev/mvm/internal/store"
)

func TestParseSecretFlags(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, size int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Repeat("s", size)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := file("big", proto.MaxSecretSize+1)
	max := file("max", proto.MaxSecretSize)
	empty := file("empty", 0)
	env := map[string]string{"API_TOKEN": "t0k3n", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	// Nine files of 64 KiB: more than the 512 KiB a VM may get in all.
	var tooMuch []string
	for i := range 9 {
		tooMuch = append(tooMuch, "s"+string(rune('a'+i))+"=@"+max)
	}
	tests := []struct {
		name  string
		specs []string
		want  map[string]string // name → value, when it succeeds
		err   string
	}{
		{"none", nil, map[string]string{}, ""},
		{"file and env", []string{"db_password=@" + pw, "api.token=env:API_TOKEN"}, map[string]string{"db_password": "hunter2\n", "api.token": "t0k3n"}, ""},
		{"empty file", []string{"e=@" + empty}, map[string]string{"e": ""}, ""},
		{"empty variable", []string{"e=env:EMPTY"}, map[string]string{"e": ""}, ""},
		{"largest", []string{"m=@" + max}, map[string]string{"m": strings.Repeat("s", proto.MaxSecretSize)}, ""},
		{"missing file", []string{"db=@" + filepath.Join(dir, "nope")}, nil, "no such file"},
		{"directory", []string{"db=@" + dir}, nil, "is a directory"},
		{"no file", []string{"db=@"}, nil, "no file after '@'"},
		{"unset variable", []string{"db=env:NOPE"}, nil, "environment variable NOPE is not set"},
		{"bad variable", []string{"db=env:1X"}, nil, "not an environment variable name"},
		{"bad name", []string{"../db=@" + pw}, nil, "secret name"},
		{"slash", []string{"a/b=@" + pw}, nil, "secret name"},
		{"long name", []string{strings.Repeat("n", 65) + "=@" + pw}, nil, "secret name"},
		{"duplicate", []string{"db=@" + pw, "db=env:API_TOKEN"}, nil, "given twice"},
		{"too big", []string{"b=@" + big}, nil, "more than 65536 bytes"},
		{"too much", tooMuch, nil, "in all"},
		{"no source", []string{"db"}, nil, "want NAME=@FILE or NAME=env:VAR"},
		{"inline value", []string{"db=hunter2"}, nil, "never given on the command line"},
		{"value without name", []string{"hunter2!"}, nil, "has no '='"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSecretFlags(tt.specs, lookup)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "t0k3n") {
					t.Errorf("error shows a value: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d secrets, want %d", len(got), len(tt.want))
			}
			for i, s := range got {
				if v, ok := tt.want[s.Name]; !ok || string(s.Data) != v {
					t.Errorf("secret %d: %s = %.20q", i, s.Name, s.Data)
				}
			}
		})
	}
}

func TestCheckSecretsGiven(t *testing.T) {
	given := []proto.Secret{{Name: "db_password"}, {Name: "extra"}}
	tests := []struct {
		name    string
		record  []string
		given   []proto.Secret
		verb    string
		wantErr string
	}{
		{"no secrets", nil, nil, "start", ""},
		{"new secrets on start", nil, given, "start", ""},
		{"all given again", []string{"db_password"}, given, "start", ""},
		{"none given", []string{"db_password", "api_token"}, nil, "start",
			"VM web was created with secrets db_password, api_token, and mvmctl does not keep secret values: give them again with 'mvmctl start web --secret db_password=@FILE --secret api_token=@FILE'"},
		{"one missing on restart", []string{"db_password", "api_token"}, given, "restart",
			"'mvmctl restart web --secret api_token=@FILE'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkSecretsGiven(&store.Record{Name: "web", Secrets: tt.record}, tt.given, tt.verb)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v\nwant %q", err, tt.wantErr)
			}
		})
	}
}

// TestDeliverOnContact: the names go into the record, the delivery runs
// once at first contact, and the values are zeroed when the verb is done.
func TestDeliverOnContact(t *testing.T) {
	m := &Manager{Log: slog.New(slog.DiscardHandler)}
	rec := &store.Record{Name: "web"}
	secrets := []proto.Secret{{Name: "db_password", Data: []byte("hunter2")}}
	done := m.deliverOnContact(rec, secrets, &progress{})
	if strings.Join(rec.Secrets, ",") != "db_password" {
		t.Fatalf("record secrets %v", rec.Secrets)
	}
	if _, ok := agentContact.Load(rec); !ok {
		t.Fatal("no delivery arranged")
	}
	// The real delivery needs an agent; a counter stands in for it.
	calls := 0
	agentContact.Store(rec, func(context.Context, *client.Client) error {
		calls++
		return nil
	})
	for range 3 {
		if err := firstContact(context.Background(), rec, nil); err != nil {
			t.Fatal(err)
		}
	}
	if calls != 1 {
		t.Errorf("delivered %d times, want once", calls)
	}
	done()
	if string(secrets[0].Data) != "\x00\x00\x00\x00\x00\x00\x00" {
		t.Errorf("value not wiped: %q", secrets[0].Data)
	}
	if _, ok := agentContact.Load(rec); ok {
		t.Error("arrangement left behind")
	}
	// No secrets: nothing is arranged and the record lists none.
	rec2 := &store.Record{Name: "x", Secrets: []string{"old"}}
	m.deliverOnContact(rec2, nil, &progress{})()
	if rec2.Secrets != nil {
		t.Errorf("record secrets %v", rec2.Secrets)
	}
}
