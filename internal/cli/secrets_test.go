package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/store"
)

// TestSecretFlagErrors: bad --secret values are usage errors found before
// anything is built or booted, and no error shows a value.
func TestSecretFlagErrors(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("hunter2"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MVM_TEST_SECRET", "hunter2")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"up", "--secret", "db=@" + filepath.Join(dir, "missing")}, "no such file"},
		{[]string{"up", "--secret", "db=env:MVM_TEST_UNSET_VARIABLE"}, "MVM_TEST_UNSET_VARIABLE is not set"},
		{[]string{"up", "--secret", "../db=@" + pw}, "secret name"},
		{[]string{"up", "--secret", "db=@" + pw, "--secret", "db=env:MVM_TEST_SECRET"}, "given twice"},
		{[]string{"up", "--secret", "db=hunter2"}, "never given on the command line"},
		{[]string{"start", "web", "--secret", "a/b=@" + pw}, "secret name"},
		{[]string{"restart", "web", "--secret", "db"}, "want NAME=@FILE"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errs := run(t, tt.args...)
			if code != 2 || !strings.Contains(errs, tt.want) {
				t.Fatalf("exit %d (want 2)\nstdout: %s\nstderr: %s\nwant %q", code, out, errs, tt.want)
			}
			if strings.Contains(out+errs, "hunter2") {
				t.Errorf("output shows the value:\n%s%s", out, errs)
			}
		})
	}
}

// TestStartAsksForSecrets: a stopped VM whose record lists secrets is not
// booted without them, and the error says how to give them.
func TestStartAsksForSecrets(t *testing.T) {
	state := t.TempDir()
	st := store.New(filepath.Join(state, "vms"))
	rec := &store.Record{Name: "web", State: "stopped", Image: "minimal", Created: time.Now(), Secrets: []string{"db_password", "api_token"}}
	if err := st.Create(rec); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("hunter2"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"start", "web"}, "VM web was created with secrets db_password, api_token, and mvmctl does not keep secret values: give them again with 'mvmctl start web --secret db_password=@FILE --secret api_token=@FILE'"},
		{[]string{"start", "web", "--secret", "db_password=@" + pw}, "'mvmctl start web --secret api_token=@FILE'"},
		{[]string{"restart", "web"}, "'mvmctl restart web --secret db_password=@FILE --secret api_token=@FILE'"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Setenv("MVM_STATE_DIR", state)
			t.Setenv("MVM_CACHE_DIR", t.TempDir())
			t.Setenv("MVM_CONFIG_DIR", t.TempDir())
			var out, errb bytes.Buffer
			code := Main(context.Background(), tt.args, strings.NewReader(""), &out, &errb)
			if code != 1 || !strings.Contains(errb.String(), tt.want) {
				t.Fatalf("exit %d (want 1)\nstdout: %s\nstderr: %s\nwant %q", code, out.String(), errb.String(), tt.want)
			}
		})
	}
	got, err := st.Get("web")
	if err != nil || got.State != "stopped" {
		t.Fatalf("record after refusals: %+v, %v", got, err)
	}
}
