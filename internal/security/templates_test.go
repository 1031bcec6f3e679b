package security

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/mvm-dev/mvm/internal/config"
	"github.com/mvm-dev/mvm/internal/paths"
	"github.com/mvm-dev/mvm/internal/template"
)

func TestCheckTemplates(t *testing.T) {
	cfg := t.TempDir()
	keys := filepath.Join(cfg, "keys")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	find := func(cs []Check, name string) *Check {
		for i := range cs {
			if cs[i].Check == name {
				return &cs[i]
			}
		}
		return nil
	}
	for _, tc := range []struct {
		name      string
		trust     config.TrustPolicy
		templates []*template.Template
		keyMode   os.FileMode
		check     string
		want      Status
	}{
		{"no policy warns", config.TrustPolicy{}, nil, 0, "template signatures", Warn},
		{"required everywhere passes", config.TrustPolicy{RequireSignatures: true}, nil, 0, "template signatures", Pass},
		{"required for some is info", config.TrustPolicy{RequireSignaturesFor: []string{"reg.example"}}, nil, 0, "template signatures", Info},
		{"unsigned pull warns", config.TrustPolicy{RequireSignatures: true}, []*template.Template{{Name: "web", Source: "reg.example/web:v1"}}, 0, "template: web", Warn},
		{"loose signing key fails", config.TrustPolicy{}, nil, 0o644, "signing key default.key", Fail},
		{"private signing key passes", config.TrustPolicy{}, nil, 0o600, "signing keys", Pass},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := filepath.Join(keys, "default.key")
			os.Remove(k)
			if tc.keyMode != 0 {
				if err := os.WriteFile(k, []byte("x"), tc.keyMode); err != nil {
					t.Fatal(err)
				}
				os.Chmod(k, tc.keyMode)
			}
			cs := checkTemplates(&Env{Dirs: paths.Dirs{Config: cfg}, Trust: tc.trust, Templates: tc.templates})
			c := find(cs, tc.check)
			if c == nil || c.Status != tc.want {
				t.Fatalf("%s: got %+v in %+v", tc.check, c, cs)
			}
			if c.Status != Pass && c.Status != Info && c.Fix == "" {
				t.Fatalf("%s has no fix", tc.check)
			}
		})
	}
}
