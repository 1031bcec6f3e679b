package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mvm-dev/mvm/internal/audit"
)

// auditEnv points mvmctl at fresh temp directories, kept across several
// runs in one test, and returns the audit directory.
func auditEnv(t *testing.T) string {
	t.Helper()
	state := t.TempDir()
	t.Setenv("MVM_STATE_DIR", state)
	t.Setenv("MVM_CACHE_DIR", t.TempDir())
	t.Setenv("MVM_CONFIG_DIR", t.TempDir())
	return audit.Dir(state)
}

// mvmctl runs Main in the current environment.
func mvmctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func auditRecords(t *testing.T, dir string) []audit.Record {
	t.Helper()
	lines, err := audit.Tail(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	var recs []audit.Record
	for _, l := range lines {
		r, err := audit.DecodeLine(l)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	return recs
}

func TestAuditRecordsStateChangingVerbs(t *testing.T) {
	tests := []struct {
		args   []string
		verb   string
		target string
		result string // prefix
	}{
		{[]string{"network", "prune"}, "network prune", "", "ok"},
		{[]string{"cache", "prune", "--dry-run"}, "cache prune", "", "ok"},
		{[]string{"rm", "Bad_Name"}, "rm", "Bad_Name", "error: "},
		{[]string{"up", "--memory", "12", "--name", "web"}, "up", "web", "error: --memory"},
		{[]string{"run", "--cpus", "999"}, "up", "", "error: --cpus"},
		{[]string{"exec", "ghost", "--", "true"}, "exec", "ghost", "error: no such VM"},
		{[]string{"snapshot", "rm", "nosuch"}, "snapshot rm", "nosuch", "error: "},
		{[]string{"down", "ghost"}, "down", "ghost", "error: "},
		{[]string{"cp", "./site", "ghost:/srv"}, "cp", "ghost", "error: "},
		{[]string{"--json", "network", "rm", "nosuch"}, "network rm", "nosuch", "error: "},
		{[]string{"up", "--nope"}, "up", "", "error: unknown flag"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			dir := auditEnv(t)
			code, _, errs := mvmctl(t, tt.args...)
			recs := auditRecords(t, dir)
			if len(recs) != 1 {
				t.Fatalf("%d records, want 1 (stderr %s)", len(recs), errs)
			}
			r := recs[0]
			if r.Verb != tt.verb || r.Target != tt.target || !strings.HasPrefix(r.Result, tt.result) {
				t.Errorf("recorded %q %q %q, want %q %q %q...", r.Verb, r.Target, r.Result, tt.verb, tt.target, tt.result)
			}
			if r.Exit != code || (code == 0) != (r.Result == "ok") {
				t.Errorf("recorded exit %d %q, mvmctl exited %d", r.Exit, r.Result, code)
			}
			if !slices.Equal(r.Args, tt.args) {
				t.Errorf("args %q, want %q", r.Args, tt.args)
			}
			if r.UID != os.Getuid() || r.PID != os.Getpid() || time.Since(r.Time) > time.Minute {
				t.Errorf("uid %d pid %d time %v", r.UID, r.PID, r.Time)
			}
			if strings.Contains(errs, "audit") {
				t.Errorf("audit warning: %s", errs)
			}
		})
	}
}

func TestAuditReadOnlyVerbsWriteNothing(t *testing.T) {
	tests := [][]string{
		{"ls"}, {"ls", "-a", "--json"}, {"version"}, {"--version"}, {"inspect", "ghost"}, {"logs", "ghost"},
		{"health", "ghost"}, {"diff", "ghost"}, {"image", "list"}, {"image", "info", "minimal"}, {"config", "show"},
		{"network", "ls"}, {"network", "inspect", "ghost"}, {"snapshot", "ls"}, {"cache", "info"},
		{"audit", "tail"}, {"audit", "verify"}, {"completions", "bash"},
		{"up", "--help"}, {"help", "rm"}, {"network"}, {"nope"}, {},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			dir := auditEnv(t)
			mvmctl(t, args...)
			files, err := audit.Files(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(files) != 0 {
				t.Fatalf("wrote %v: %v", files, auditRecords(t, dir))
			}
		})
	}
}

func TestAuditRedactsSecrets(t *testing.T) {
	dir := auditEnv(t)
	args := []string{"exec", "ghost", "-e", "TOKEN=hunter2", "--env=DB_PASS=s3cret", "-ieAWS_KEY=k3y", "--",
		"env", "API_KEY=topsecret", "mysql", "--password", "pw1", "--token=pw2", "-h", "db"}
	if code, _, errs := mvmctl(t, args...); code != 1 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	recs := auditRecords(t, dir)
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	got := strings.Join(recs[0].Args, " ")
	want := "exec ghost -e TOKEN=<redacted> --env=DB_PASS=<redacted> -ieAWS_KEY=<redacted> -- " +
		"env API_KEY=<redacted> mysql --password <redacted> --token=<redacted> -h db"
	if got != want {
		t.Fatalf("args\n got %s\nwant %s", got, want)
	}
	raw, err := os.ReadFile(filepath.Join(dir, audit.CurrentName))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"hunter2", "s3cret", "k3y", "topsecret", "pw1", "pw2"} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("%q is in the audit file", secret)
		}
	}
}

func TestAuditTailAndVerify(t *testing.T) {
	dir := auditEnv(t)
	defer func(n int64) { audit.MaxFileSize = n }(audit.MaxFileSize)
	audit.MaxFileSize = 700 // a few records per file
	verbs := [][]string{{"rm", "a1"}, {"down", "b2"}, {"network", "prune"}, {"snapshot", "rm", "c3"}, {"rm", "d4"}, {"network", "rm", "e5"}}
	for _, v := range verbs {
		mvmctl(t, v...)
	}
	code, out, errs := mvmctl(t, "audit", "verify")
	if code != 0 || !strings.HasPrefix(out, "ok: 6 records in ") || strings.HasSuffix(out, " in 1 files\n") {
		t.Fatalf("verify: exit %d %q %s", code, out, errs)
	}

	tests := []struct {
		args []string
		rows []string // in order, one per line after the header
		json bool
	}{
		{[]string{"audit", "tail"}, []string{"a1", "b2", "network prune", "c3", "d4", "e5"}, false},
		{[]string{"audit", "tail", "-n", "2"}, []string{"d4", "e5"}, false},
		{[]string{"audit", "tail", "-n", "3", "--json"}, []string{"c3", "d4", "e5"}, true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errs := mvmctl(t, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if !tt.json {
				if !strings.HasPrefix(lines[0], "TIME") || !strings.Contains(lines[0], "RESULT") {
					t.Fatalf("no header: %s", out)
				}
				lines = lines[1:]
			}
			if len(lines) != len(tt.rows) {
				t.Fatalf("%d rows, want %d:\n%s", len(lines), len(tt.rows), out)
			}
			for i, l := range lines {
				if !strings.Contains(l, tt.rows[i]) {
					t.Errorf("row %d %q lacks %q", i, l, tt.rows[i])
				}
				if tt.json {
					var r audit.Record
					if err := json.Unmarshal([]byte(l), &r); err != nil || r.Hash == "" {
						t.Errorf("row %d: %v", i, err)
					}
				} else if !strings.Contains(l, "error: ") && !strings.Contains(l, " ok") {
					t.Errorf("row %d %q has no result", i, l)
				}
			}
		})
	}

	// Tamper with the second line of the current file.
	cur := filepath.Join(dir, audit.CurrentName)
	data, err := os.ReadFile(cur)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) < 3 {
		t.Fatalf("want at least 2 lines in audit.log, have %q", data)
	}
	lines[1] = bytes.Replace(lines[1], []byte(`"exit":1`), []byte(`"exit":0`), 1)
	if err := os.WriteFile(cur, bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs = mvmctl(t, "audit", "verify")
	if code != 1 || !strings.Contains(errs, "audit.log:2: ") || !strings.Contains(errs, "edited") {
		t.Fatalf("verify after tampering: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	code, out, _ = mvmctl(t, "audit", "verify", "--json")
	var res struct {
		OK    bool
		Error *audit.VerifyError
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 1 || res.OK || res.Error == nil || res.Error.Line != 2 || res.Error.Kind != audit.KindEdited {
		t.Fatalf("verify --json: exit %d %v %s", code, err, out)
	}
}

func TestAuditTailEscapesControlCharacters(t *testing.T) {
	dir := auditEnv(t)
	if _, err := audit.New(dir).Append(context.Background(), audit.Record{Verb: "rm", Target: "\x1b]0;pwned\x07", Result: "error: \x1b[2J"}); err != nil {
		t.Fatal(err)
	}
	code, out, errs := mvmctl(t, "audit", "tail")
	if code != 0 || strings.ContainsAny(out, "\x1b\x07") || !strings.Contains(out, `\x1b]0;pwned\a`) {
		t.Fatalf("exit %d %q %s", code, out, errs)
	}
}

// A failure to record prints one warning and changes no exit code.
func TestAuditWriteFailureKeepsExitCode(t *testing.T) {
	tests := []struct {
		args []string
		code int
	}{
		{[]string{"network", "prune"}, 0},
		{[]string{"rm", "Bad_Name"}, 1},
		{[]string{"up", "--memory", "12"}, 2},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			dir := auditEnv(t)
			// The audit directory cannot be created: a file is in its way.
			if err := os.WriteFile(dir, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			code, _, errs := mvmctl(t, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d: %s", code, tt.code, errs)
			}
			if n := strings.Count(errs, "warning: audit trail not written"); n != 1 {
				t.Fatalf("%d warnings, want 1: %s", n, errs)
			}
		})
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAuditTailFollow(t *testing.T) {
	dir := auditEnv(t)
	defer func(d time.Duration, n int64) { audit.PollInterval, audit.MaxFileSize = d, n }(audit.PollInterval, audit.MaxFileSize)
	audit.PollInterval, audit.MaxFileSize = 5*time.Millisecond, 600
	mvmctl(t, "rm", "old-one")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"audit", "tail", "-f", "-n", "1"}, strings.NewReader(""), &out, &errb)
	}()
	waitFor := func(s string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(out.String(), s) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in output:\n%s\nstderr %s", s, out.String(), errb.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("old-one")
	l := audit.New(dir)
	names := []string{"new-a", "new-b", "new-c", "new-d", "new-e"}
	for _, n := range names {
		if _, err := l.Append(context.Background(), audit.Record{Verb: "rm", Target: n, Args: []string{"rm", n}, Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range names {
		waitFor(n)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("tail -f did not end on cancel")
	}
	if files, _ := audit.Files(dir); len(files) < 2 {
		t.Errorf("no rotation while following: %v", files)
	}
	if got := strings.Count(out.String(), "\n"); got != 1+1+len(names) {
		t.Errorf("%d lines, want %d:\n%s", got, 2+len(names), out.String())
	}
}

// readOnlyVerbs are the commands that are deliberately not audited.
var readOnlyVerbs = []string{
	"ls", "inspect", "logs", "health", "diff", "events", "doctor", "version", "completions",
	"config show", "config get", "config keys", "image list", "image search", "image info", "cache info",
	"snapshot ls", "network ls", "network inspect", "audit tail", "audit verify",
	"security status", "template list", "template info", "template verify", "bench", "pool ls", "pool inspect",
}

// Every runnable command is either audited or known to be read-only, so a
// new state-changing command cannot silently escape the trail.
func TestAuditedVerbsClassified(t *testing.T) {
	root := NewRoot(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
	seen := map[string]bool{}
	for _, c := range allCommands(root) {
		if !c.Runnable() {
			continue
		}
		v := verbOf(c)
		seen[v] = true
		if auditedVerbs[v] == slices.Contains(readOnlyVerbs, v) {
			t.Errorf("%q: add it to auditedVerbs (audit.go) if it changes state, else to readOnlyVerbs (audit_test.go)", v)
		}
	}
	for v := range auditedVerbs {
		if !seen[v] {
			t.Errorf("auditedVerbs has %q, which is not a command", v)
		}
	}
}
