package vm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mvm-dev/mvm/internal/artifact"
	"github.com/mvm-dev/mvm/internal/registry"
	"github.com/mvm-dev/mvm/internal/sign"
	"github.com/mvm-dev/mvm/internal/template"
)

// originDir keeps, inside a pulled template, the manifest, config and
// signatures it arrived with, so `template verify NAME` can check it later.
const originDir = ".origin"

// packMemoFile, in a template's directory, remembers what its files packed
// to, so pushing an unchanged template again does not pack it again.
const packMemoFile = ".pack-memo.json"

// Signature manifests: an empty config and one envelope layer.
const (
	emptyConfigType = "application/vnd.oci.empty.v1+json"
	maxSigManifest  = 64 << 10
	maxEnvelope     = 16 << 10
)

// TemplateShareOptions are the choices of push, pull and verify.
type TemplateShareOptions struct {
	Store registry.Options
	// Key names the signing key for push ("" = "default" when it exists);
	// NoSign pushes unsigned.
	Key    string
	NoSign bool
	// Replace lets pull overwrite a local template of the same name.
	Replace bool
	// VerifyFiles makes pull also hash every file it rebuilt against the
	// signed config (every blob is checked regardless).
	VerifyFiles bool
	Progress    func(artifact.Progress)
}

// TemplatePushResult says what a push did.
type TemplatePushResult struct {
	Ref      string `json:"ref"`
	Digest   string `json:"digest"`
	Size     int64  `json:"size"`
	SignedBy string `json:"signed_by,omitempty"`
}

func (m *Manager) keyring() *sign.Keyring { return sign.NewKeyring(m.Dirs.Config) }

// blobDir is the content-addressed blob cache pushes pack into and pulls
// download into, so either finds what the other left.
func (m *Manager) blobDir() string { return filepath.Join(m.Dirs.Cache, "blobs") }

// TemplatePush packs a built template and sends it to ref (an OCI
// repository or an s3:// prefix, with an optional :tag), signed with the
// user's key unless NoSign.
func (m *Manager) TemplatePush(ctx context.Context, name, ref string, o TemplateShareOptions) (*TemplatePushResult, error) {
	addr, tag, err := registry.SplitRef(ref)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(tag, "sha256:") {
		return nil, fmt.Errorf("push to a tag, not a digest: %s", ref)
	}
	var key *sign.PrivateKey
	if !o.NoSign {
		kn := o.Key
		if kn == "" {
			kn = "default"
		}
		if key, err = m.keyring().Load(kn); err != nil {
			if o.Key == "" && errors.Is(err, sign.ErrNoKey) {
				return nil, fmt.Errorf("no signing key: create one with 'mvmctl key generate', or push unsigned with --no-sign")
			}
			return nil, err
		}
	}
	ts := m.Templates()
	unlock, err := ts.Lock(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	t, err := ts.Get(name)
	if err != nil {
		return nil, err
	}
	files, err := m.TemplateFiles(t)
	if err != nil {
		return nil, err
	}
	meta := *t
	// Only what the template is: where it was pulled from, its last push
	// and when the record last changed would give the same template a new
	// digest on every push.
	meta.Source, meta.Digest, meta.SignedBy, meta.Updated = "", "", "", time.Time{}
	mb, err := json.Marshal(&meta)
	if err != nil {
		return nil, err
	}
	var inputs []artifact.Input
	for _, f := range files {
		inputs = append(inputs, artifact.Input{Name: f[0], Path: f[1]})
	}
	// The memo is only a hint (Pack checks every file and blob it names),
	// so a missing or unreadable one just means packing everything.
	memoPath := filepath.Join(t.Dir, packMemoFile)
	memo, err := os.ReadFile(memoPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		slog.Debug("template push: pack memo unreadable", "file", memoPath, "err", err)
	}
	packed, err := artifact.Pack(ctx, inputs, artifact.PackOptions{
		BlobDir: m.blobDir(), Memo: memo,
		Template: mb, Name: t.Name, Progress: o.Progress,
	})
	if err != nil {
		return nil, fmt.Errorf("pack template %s: %w", name, err)
	}
	defer packed.Close()
	if len(packed.Reused) < len(inputs) {
		if err := writePackMemo(memoPath, packed); err != nil {
			slog.Warn("template push: could not save the pack memo; the next push packs again", "file", memoPath, "err", err)
		}
	}
	st, err := registry.Open(addr, o.Store)
	if err != nil {
		return nil, err
	}
	desc, err := artifact.Push(ctx, st, tag, packed, artifact.PushOptions{Progress: o.Progress})
	if err != nil {
		return nil, fmt.Errorf("push template %s to %s: %w", name, st, err)
	}
	res := &TemplatePushResult{Ref: st.String() + ":" + tag, Digest: desc.Digest, Size: desc.Size}
	for _, b := range packed.Blobs {
		res.Size += b.Size
	}
	if key != nil {
		env, err := sign.Sign(key, desc.Digest)
		if err != nil {
			return nil, err
		}
		if err := putSignature(ctx, st, desc, env); err != nil {
			return nil, fmt.Errorf("push the signature of %s: %w", name, err)
		}
		res.SignedBy = key.Public().ID
	}
	t.Digest = desc.Digest
	if err := ts.Put(t); err != nil {
		return nil, err
	}
	return res, nil
}

// writePackMemo replaces a template's pack memo atomically: a torn memo
// would only be ignored, but a whole one saves the next push its packing.
func writePackMemo(path string, p *artifact.Packed) error {
	b, err := p.MarshalMemo()
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), packMemoFile+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // gone already once renamed
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// putSignature stores an envelope as a manifest whose subject is the signed
// one, under the tag SignatureTag names (registries without the referrers
// API hold it too).
func putSignature(ctx context.Context, st registry.Store, subject registry.Descriptor, env []byte) error {
	empty := []byte("{}")
	cfg := registry.Descriptor{MediaType: emptyConfigType, Digest: digestOf(empty), Size: int64(len(empty))}
	layer := registry.Descriptor{MediaType: registry.SignatureMediaType, Digest: digestOf(env), Size: int64(len(env))}
	for _, b := range []struct {
		d registry.Descriptor
		b []byte
	}{{cfg, empty}, {layer, env}} {
		if ok, err := st.HasBlob(ctx, b.d.Digest); err == nil && ok {
			continue
		}
		if err := st.PutBlob(ctx, b.d, bytes.NewReader(b.b)); err != nil {
			return err
		}
	}
	man := sigManifest{
		SchemaVersion: 2, MediaType: registry.ManifestMediaType, ArtifactType: registry.SignatureArtifactType,
		Config: cfg, Layers: []registry.Descriptor{layer}, Subject: &subject,
	}
	mb, err := json.Marshal(man)
	if err != nil {
		return err
	}
	_, err = st.PutManifest(ctx, registry.SignatureTag(subject.Digest), registry.ManifestMediaType, mb)
	return err
}

type sigManifest struct {
	SchemaVersion int                   `json:"schemaVersion"`
	MediaType     string                `json:"mediaType"`
	ArtifactType  string                `json:"artifactType"`
	Config        registry.Descriptor   `json:"config"`
	Layers        []registry.Descriptor `json:"layers"`
	Subject       *registry.Descriptor  `json:"subject,omitempty"`
}

func digestOf(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

// fetchSignatures reads the envelopes stored for a manifest digest; none is
// not an error (the trust policy decides).
func fetchSignatures(ctx context.Context, st registry.Store, digest string) ([][]byte, error) {
	b, _, err := st.GetManifest(ctx, registry.SignatureTag(digest))
	if errors.Is(err, registry.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read signatures: %w", err)
	}
	if len(b) > maxSigManifest {
		return nil, fmt.Errorf("signature manifest of %d bytes is too large", len(b))
	}
	var man sigManifest
	if err := json.Unmarshal(b, &man); err != nil {
		return nil, fmt.Errorf("signature manifest: %w", err)
	}
	var out [][]byte
	for _, l := range man.Layers {
		if l.MediaType != registry.SignatureMediaType || l.Size < 0 || l.Size > maxEnvelope || len(out) >= 16 {
			continue
		}
		rc, err := st.GetBlob(ctx, l, 0)
		if err != nil {
			return nil, fmt.Errorf("read signature: %w", err)
		}
		env, err := io.ReadAll(io.LimitReader(rc, l.Size+1))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("read signature: %w", err)
		}
		if int64(len(env)) != l.Size || digestOf(env) != l.Digest {
			return nil, fmt.Errorf("signature blob %s does not match its digest", l.Digest)
		}
		out = append(out, env)
	}
	return out, nil
}

// checkTrust applies the trust policy to a manifest from st: the key ID that
// signed it, or a warning when nothing verified and none was required.
func (m *Manager) checkTrust(ctx context.Context, st registry.Store, digest string, required bool) (string, error, error) {
	envs, err := fetchSignatures(ctx, st, digest)
	if err != nil {
		return "", nil, err
	}
	return m.checkEnvelopes(envs, digest, required)
}

// checkEnvelopes is checkTrust on envelopes already fetched.
func (m *Manager) checkEnvelopes(envs [][]byte, digest string, required bool) (string, error, error) {
	trusted, err := m.keyring().TrustedSet()
	if err != nil {
		return "", nil, err
	}
	return sign.Check(required, envs, digest, trusted)
}

// TemplatePullResult says what a pull did.
type TemplatePullResult struct {
	Template *template.Template `json:"template"`
	Digest   string             `json:"digest"`
	SignedBy string             `json:"signed_by,omitempty"`
	Warning  string             `json:"warning,omitempty"`
}

// TemplatePull fetches ref into a local template (named as pushed unless
// name is given). The signature is checked before any file is fetched;
// every blob and file is checked against its digest before anything lands.
func (m *Manager) TemplatePull(ctx context.Context, ref, name string, o TemplateShareOptions) (*TemplatePullResult, error) {
	addr, tag, err := registry.SplitRef(ref)
	if err != nil {
		return nil, err
	}
	if name != "" {
		if err := template.ValidateName(name); err != nil {
			return nil, err
		}
	}
	st, err := registry.Open(addr, o.Store)
	if err != nil {
		return nil, err
	}
	required := m.Config.Trust.Requires(st.String())
	res := &TemplatePullResult{}
	var sigs [][]byte
	if err := os.MkdirAll(m.Templates().Root(), 0o700); err != nil {
		return nil, err
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	dst := filepath.Join(m.Templates().Root(), ".pull-"+hex.EncodeToString(rnd[:]))
	defer os.RemoveAll(dst)
	var manifest []byte
	pulled, err := artifact.Pull(ctx, st, tag, dst, artifact.PullOptions{
		BlobDir: m.blobDir(),
		Verify: func(digest string, man []byte) error {
			envs, err := fetchSignatures(ctx, st, digest)
			if err != nil {
				return fmt.Errorf("template %s refused: %w", ref, err)
			}
			id, warn, err := m.checkEnvelopes(envs, digest, required)
			if err != nil {
				return fmt.Errorf("template %s refused: %w", ref, err)
			}
			res.SignedBy, res.Digest = id, digest
			if warn != nil {
				res.Warning = warn.Error()
			}
			sigs = envs
			manifest = append([]byte(nil), man...)
			return nil
		},
		VerifyFiles: o.VerifyFiles,
		Progress:    o.Progress,
	})
	if err != nil {
		return nil, err
	}
	t, err := template.Decode(pulled.Config.Template)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", ref, err)
	}
	hasSnap := false
	for _, f := range pulled.Config.Files {
		top, _, _ := strings.Cut(f.Name, "/")
		switch top {
		case template.ImageDir:
		case template.SnapshotDir:
			hasSnap = true
		default:
			return nil, fmt.Errorf("template %s holds %q, outside image/ and snapshot/: refused", ref, f.Name)
		}
	}
	if hasSnap != (t.Snapshot != nil) {
		return nil, fmt.Errorf("template %s: its record and its files disagree about a snapshot", ref)
	}
	if name != "" {
		t.Name = name
	}
	t.Source, t.Digest, t.SignedBy = st.String()+":"+tag, res.Digest, res.SignedBy
	t.Created = t.Created.UTC()
	if err := saveOrigin(dst, manifest, pulled.ConfigBytes, sigs); err != nil {
		return nil, err
	}
	t, err = m.TemplateImport(ctx, t, dst, o.Replace)
	if err != nil {
		return nil, err
	}
	res.Template = t
	return res, nil
}

// saveOrigin keeps what a template arrived as.
func saveOrigin(dir string, manifest, cb []byte, sigs [][]byte) error {
	od := filepath.Join(dir, originDir)
	if err := os.MkdirAll(od, 0o700); err != nil {
		return err
	}
	files := map[string][]byte{"manifest.json": manifest, "config.json": cb}
	for i, s := range sigs {
		files[fmt.Sprintf("signature-%d.json", i)] = s
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(od, n), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// TemplateVerifyResult is what verify found.
type TemplateVerifyResult struct {
	Target   string   `json:"target"`
	Digest   string   `json:"digest"`
	SignedBy string   `json:"signed_by"`
	Files    int      `json:"files_checked,omitempty"`
	Adjusted []string `json:"adjusted,omitempty"` // rewritten for this host on import
}

// TemplateVerifyRef checks the signature of a template in a store against
// the trusted keys: a signature is required whatever the policy.
func (m *Manager) TemplateVerifyRef(ctx context.Context, ref string, o TemplateShareOptions) (*TemplateVerifyResult, error) {
	addr, tag, err := registry.SplitRef(ref)
	if err != nil {
		return nil, err
	}
	st, err := registry.Open(addr, o.Store)
	if err != nil {
		return nil, err
	}
	man, desc, err := st.GetManifest(ctx, tag)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ref, err)
	}
	if digestOf(man) != desc.Digest || (strings.HasPrefix(tag, "sha256:") && desc.Digest != tag) {
		return nil, fmt.Errorf("manifest of %s does not match its digest", ref)
	}
	id, _, err := m.checkTrust(ctx, st, desc.Digest, true)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	return &TemplateVerifyResult{Target: st.String() + ":" + tag, Digest: desc.Digest, SignedBy: id}, nil
}

// TemplateVerifyLocal checks a pulled template: its signature over the
// manifest it arrived as, the config against that manifest, and every file
// against the config, except the few an import rewrites for this host (the
// snapshot's records of file paths and its disks' backing-file headers),
// which are listed.
func (m *Manager) TemplateVerifyLocal(ctx context.Context, name string) (*TemplateVerifyResult, error) {
	t, err := m.Templates().Get(name)
	if err != nil {
		return nil, err
	}
	od := filepath.Join(t.Dir, originDir)
	man, err := os.ReadFile(filepath.Join(od, "manifest.json"))
	if err != nil {
		return nil, fmt.Errorf("template %s was not pulled, so there is no signature to check (verify what you push with 'template verify REF')", name)
	}
	digest := digestOf(man)
	if t.Digest != "" && digest != t.Digest {
		return nil, fmt.Errorf("template %s: its saved manifest is %s, the record says %s", name, digest, t.Digest)
	}
	var envs [][]byte
	ents, _ := os.ReadDir(od)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "signature-") {
			if b, err := os.ReadFile(filepath.Join(od, e.Name())); err == nil {
				envs = append(envs, b)
			}
		}
	}
	trusted, err := m.keyring().TrustedSet()
	if err != nil {
		return nil, err
	}
	id, err := sign.VerifyAny(envs, digest, trusted)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	mf, err := artifact.DecodeManifest(man)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	cb, err := os.ReadFile(filepath.Join(od, "config.json"))
	if err != nil {
		return nil, err
	}
	cfg, err := artifact.DecodeConfig(cb)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", name, err)
	}
	if digestOf(cb) != mf.Config.Digest {
		return nil, fmt.Errorf("template %s: its saved config does not match the signed manifest", name)
	}
	res := &TemplateVerifyResult{Target: name, Digest: digest, SignedBy: id}
	for _, f := range cfg.Files {
		p := filepath.Join(t.Dir, filepath.FromSlash(f.Name))
		if adjustedOnImport(f.Name) {
			res.Adjusted = append(res.Adjusted, f.Name)
			continue
		}
		sum, size, err := fileSHA256(p)
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", name, err)
		}
		if size != f.Size || sum != f.SHA256 {
			return nil, fmt.Errorf("template %s: %s was changed since it was pulled (sha256 %s, signed %s)", name, f.Name, sum, f.SHA256)
		}
		res.Files++
	}
	return res, nil
}

func adjustedOnImport(name string) bool {
	if !strings.HasPrefix(name, template.SnapshotDir+"/") {
		return false
	}
	b := filepath.Base(name)
	return b == "snapshot.json" || b == snapMetaFile || strings.HasSuffix(b, ".qcow2")
}

func fileSHA256(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
