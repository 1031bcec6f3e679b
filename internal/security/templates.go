package security

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/mvm-dev/mvm/internal/sign"
)

// checkTemplates reports what a template pull trusts: the signature
// policy, templates that arrived unsigned, and the signing keys' files.
func checkTemplates(e *Env) []Check {
	var out []Check
	p := e.Trust
	switch {
	case p.RequireSignatures:
		out = append(out, Check{Status: Pass, Check: "template signatures", Detail: "every pull must carry a signature by a trusted key ([trust] require_signatures)"})
	case len(p.RequireSignaturesFor) > 0:
		out = append(out, Check{Status: Info, Check: "template signatures",
			Detail: "required from " + strings.Join(p.RequireSignaturesFor, ", ") + "; other stores' unsigned templates pull with a warning"})
	default:
		out = append(out, Check{Status: Warn, Check: "template signatures",
			Detail: "not required: an unsigned template, or one signed by an unknown key, pulls with a warning",
			Fix:    "add [trust] require_signatures = true (or require_signatures_for = [\"registry.example.com\"]) to config.toml, and 'mvmctl key trust FILE' for each publisher"})
	}
	for _, t := range e.Templates {
		if t.Source != "" && t.SignedBy == "" {
			out = append(out, Check{Status: Warn, Check: "template: " + t.Name,
				Detail: "pulled from " + t.Source + " without a verified signature",
				Fix:    fmt.Sprintf("trust its publisher's key ('mvmctl key trust FILE') and pull it again with 'mvmctl template pull %s %s --replace'", t.Source, t.Name)})
		}
	}
	keys, _ := filepath.Glob(filepath.Join(e.Dirs.Config, sign.KeysDir, "*.key"))
	loose := 0
	for _, k := range keys {
		fi, err := os.Stat(k)
		if err != nil || fi.Mode().Perm()&0o077 == 0 {
			continue
		}
		loose++
		out = append(out, Check{Status: Fail, Check: "signing key " + filepath.Base(k),
			Detail: fmt.Sprintf("%s is open to other users (mode %04o): whoever read it can sign templates as you", k, fi.Mode().Perm()),
			Fix:    "chmod 600 " + k + ", and treat it as leaked: 'mvmctl key generate NEW', and have others 'mvmctl key untrust' the old one"})
	}
	if len(keys) > 0 && loose == 0 {
		out = append(out, Check{Status: Pass, Check: "signing keys", Detail: fmt.Sprintf("%d signing key(s) in %s, private to you", len(keys), filepath.Join(e.Dirs.Config, sign.KeysDir))})
	}
	return out
}
