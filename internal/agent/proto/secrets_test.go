package proto

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func b64(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }

func TestValidateSecretName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"db_password", true},
		{"tls.key", true},
		{"A-Z.0_9", true},
		{".hidden", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{strings.Repeat("a", 65), false},
		{".", false},
		{"..", false},
		{"a..b", false},
		{"a/b", false},
		{"/etc", false},
		{"a b", false},
		{"a\x00", false},
		{"ünï", false},
	}
	for _, tt := range tests {
		if err := ValidateSecretName(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidateSecretName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestParseSecrets(t *testing.T) {
	many := make([]string, MaxSecrets+1)
	for i := range many {
		many[i] = fmt.Sprintf(`{"name":"s%d","data":""}`, i)
	}
	// Eight of 64 KiB: 512 KiB, the most a request may carry.
	full := make([]string, 8)
	for i := range full {
		full[i] = fmt.Sprintf(`{"name":"f%d","data":"%s"}`, i, b64(MaxSecretSize))
	}
	tests := []struct {
		name, in, want string // want: "" ok, else part of the error
	}{
		{"empty args", ``, ""},
		{"empty set", `{"secrets":[]}`, ""},
		{"one", `{"secrets":[{"name":"db_password","data":"aHVudGVyMg=="}]}`, ""},
		{"mode and user", `{"secrets":[{"name":"k","data":"","mode":416,"user":"postgres:postgres"}]}`, ""},
		{"largest", `{"secrets":[` + strings.Join(full, ",") + `]}`, ""},
		{"bad name", `{"secrets":[{"name":"../x","data":""}]}`, "secret name"},
		{"slash", `{"secrets":[{"name":"a/b","data":""}]}`, "secret name"},
		{"duplicate", `{"secrets":[{"name":"a","data":""},{"name":"a","data":""}]}`, "given twice"},
		{"too big", `{"secrets":[{"name":"a","data":"` + b64(MaxSecretSize+1) + `"}]}`, "at most 65536"},
		{"too much", `{"secrets":[` + strings.Join(full, ",") + `,{"name":"x","data":"AA=="}]}`, "in all"},
		{"too many", `{"secrets":[` + strings.Join(many, ",") + `]}`, "at most 128"},
		{"world readable", `{"secrets":[{"name":"a","data":"","mode":420}]}`, "mode 0644"},
		{"executable", `{"secrets":[{"name":"a","data":"","mode":448}]}`, "mode 0700"},
		{"no owner read", `{"secrets":[{"name":"a","data":"","mode":32}]}`, "mode 0040"},
		{"control in user", `{"secrets":[{"name":"a","data":"","user":"a\nb"}]}`, "invalid user"},
		{"unknown field", `{"secrets":[],"extra":1}`, "unknown field"},
		{"unknown secret field", `{"secrets":[{"name":"a","data":"","path":"/etc/shadow"}]}`, "unknown field"},
		{"not base64", `{"secrets":[{"name":"a","data":"!!"}]}`, "base64"},
		{"trailing", `{"secrets":[]} {}`, "trailing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseSecrets([]byte(tt.in))
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v, want %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range r.Secrets {
				if s.Mode == 0 {
					t.Errorf("%s: default mode not filled in", s.Name)
				}
			}
		})
	}
}

// TestSecretsRequestFitsAFrame: the largest valid request, as the client
// sends it, is a legal request frame.
func TestSecretsRequestFitsAFrame(t *testing.T) {
	var r SecretsRequest
	for i := range MaxSecrets {
		n := 0
		if i < MaxSecretsTotal/MaxSecretSize {
			n = MaxSecretSize
		}
		r.Secrets = append(r.Secrets, Secret{Name: fmt.Sprintf("%064d", i), Data: make([]byte, n), Mode: 0o640, User: strings.Repeat("u", maxSecretUser)})
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	args, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(Request{Op: OpSecrets, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	if len(b)+1 > MaxFrame {
		t.Fatalf("largest request is %d bytes, frame limit %d", len(b)+1, MaxFrame)
	}
}

// TestSecretNeverPrinted: formatting a secret shows its name and size only.
func TestSecretNeverPrinted(t *testing.T) {
	s := Secret{Name: "db_password", Data: []byte("hunter2")}
	r := SecretsRequest{Secrets: []Secret{s}}
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(f, r); strings.Contains(out, "hunter2") || !strings.Contains(out, "db_password") {
			t.Errorf("%s: %q", f, out)
		}
	}
	r.Wipe()
	if string(s.Data) != "\x00\x00\x00\x00\x00\x00\x00" {
		t.Errorf("Wipe left %q", s.Data)
	}
}

// FuzzParseSecrets: no input panics, what is accepted is valid, survives
// a round trip, and no accepted name can leave the directory.
func FuzzParseSecrets(f *testing.F) {
	f.Add([]byte(`{"secrets":[{"name":"db_password","data":"aHVudGVyMg=="}]}`))
	f.Add([]byte(`{"secrets":[{"name":"a","data":"","mode":288,"user":"1000:1000"},{"name":"b","data":"AA=="}]}`))
	f.Add([]byte(`{"secrets":[{"name":"..","data":""}]}`))
	f.Add([]byte(`{"secrets":null}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ParseSecrets(in)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted invalid request: %v", err)
		}
		for _, s := range r.Secrets {
			if strings.ContainsAny(s.Name, "/\x00") || strings.Contains(s.Name, "..") {
				t.Fatalf("accepted name %q", s.Name)
			}
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseSecrets(b); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}
