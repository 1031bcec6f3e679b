package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/artifact"
	"github.com/mvm-dev/mvm/internal/registry"
	"github.com/mvm-dev/mvm/internal/vm"
)

// storeFlags are how push, pull and verify reach a registry or bucket.
type storeFlags struct {
	o             registry.Options
	passwordStdin bool
}

func (f *storeFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVarP(&f.o.Username, "username", "u", "", "registry user (or S3 access key ID); default: the Docker credential store / AWS environment")
	fl.BoolVar(&f.passwordStdin, "password-stdin", false, "read the password (or S3 secret key) from stdin")
	fl.BoolVar(&f.o.Insecure, "insecure", false, "plain HTTP to the registry; allowed for loopback addresses only")
	fl.StringVar(&f.o.CAFile, "ca-file", "", "PEM file of a CA to trust for the registry's TLS certificate")
	fl.StringVar(&f.o.Endpoint, "s3-endpoint", "", "S3 endpoint URL for s3:// stores (default: $MVM_S3_ENDPOINT, $AWS_ENDPOINT_URL, AWS)")
	fl.DurationVar(&f.o.Timeout, "timeout", 0, "bound on each request and on any stall of a transfer (default 30s)")
}

func (f *storeFlags) options(g *globals) (registry.Options, error) {
	if f.passwordStdin {
		if f.o.Username == "" {
			return f.o, usageError{errors.New("--password-stdin needs --username")}
		}
		b, err := io.ReadAll(io.LimitReader(g.stdin, 4096))
		if err != nil {
			return f.o, err
		}
		f.o.Password = strings.TrimRight(string(b), "\r\n")
	}
	return f.o, nil
}

// templateTransferCommands are push, pull and verify.
func templateTransferCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{newTemplatePushCommand(g), newTemplatePullCommand(g), newTemplateVerifyCommand(g)}
}

func newTemplatePushCommand(g *globals) *cobra.Command {
	var sf storeFlags
	var o vm.TemplateShareOptions
	cmd := &cobra.Command{
		Use:   "push NAME REF",
		Short: "Send a built template to an OCI registry or an S3 bucket, signed with your key",
		Long: `Send a built template to REF: an OCI registry repository
(HOST[:PORT]/NAME[:TAG]) or an S3 prefix (s3://BUCKET/PREFIX[:TAG]).
It goes as an OCI 1.1 artifact (one layer per chunk of each file: kernel,
initramfs, rootfs, snapshot state and memory), which oras and crane can
read; only blobs the store lacks are sent. The manifest's digest is signed
with your key ('mvmctl key generate'; --key NAME, --no-sign to skip).`,
		Example: `  mvmctl template push web registry.example.com/team/web:v1
  mvmctl template push web s3://templates/team/web:v1
  echo "$PW" | mvmctl template push web localhost:5000/web -u me --password-stdin`,
		Args:              exactArgs(2, "the template's name and where to push it"),
		ValidArgsFunction: completeTemplateNames(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if o.Store, err = sf.options(g); err != nil {
				return err
			}
			m, err := g.manager()
			if err != nil {
				return err
			}
			bar := newByteBar(g)
			o.Progress = bar.update
			res, err := m.TemplatePush(cmd.Context(), args[0], args[1], o)
			bar.done()
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, res)
			}
			fmt.Fprintln(g.stdout, res.Digest)
			signed := "unsigned"
			if res.SignedBy != "" {
				signed = "signed by " + res.SignedBy
			}
			fmt.Fprintf(g.stderr, "Pushed %s to %s (%s, %s). Others fetch it with: mvmctl template pull %s\n",
				args[0], res.Ref, humanBytes(res.Size), signed, res.Ref)
			return nil
		},
	}
	sf.register(cmd)
	cmd.Flags().StringVar(&o.Key, "key", "", "signing key (default: 'default')")
	cmd.Flags().BoolVar(&o.NoSign, "no-sign", false, "push without a signature (pulls under a signature policy will refuse it)")
	return cmd
}

func newTemplatePullCommand(g *globals) *cobra.Command {
	var sf storeFlags
	var o vm.TemplateShareOptions
	cmd := &cobra.Command{
		Use:   "pull REF [NAME]",
		Short: "Fetch a template from an OCI registry or an S3 bucket, checking its signature and every byte",
		Long: `Fetch a template from REF into a local template (named as it was pushed,
or NAME). Its signature is checked against your trusted keys ('mvmctl key
trust') before anything is downloaded; a store that [trust] in config.toml
names must serve a valid one. Every blob is checked against its digest
before its bytes are used, so each file is made only of signed bytes;
--verify-files also reads each rebuilt file back against its signed
SHA-256 ('mvmctl template verify NAME' does the same later). An
interrupted pull resumes where it stopped.`,
		Example: `  mvmctl template pull registry.example.com/team/web:v1
  mvmctl template pull s3://templates/team/web:v1 web-v1 && mvmctl up --template web-v1`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageError{errors.New("template pull takes a reference and an optional local name")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if o.Store, err = sf.options(g); err != nil {
				return err
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			m, err := g.manager()
			if err != nil {
				return err
			}
			bar := newByteBar(g)
			o.Progress = bar.update
			res, err := m.TemplatePull(cmd.Context(), args[0], name, o)
			bar.done()
			if err != nil {
				return err
			}
			if res.Warning != "" {
				fmt.Fprintf(g.stderr, "warning: %s (trust the publisher's key with 'mvmctl key trust FILE', or require signatures in config.toml [trust])\n", res.Warning)
			}
			if g.json {
				return writeJSON(g.stdout, res)
			}
			fmt.Fprintln(g.stdout, res.Template.Name)
			signed := "unsigned"
			if res.SignedBy != "" {
				signed = "signed by " + res.SignedBy
			}
			fmt.Fprintf(g.stderr, "Pulled %s as template %s (%s, %s). Try: mvmctl up --template %s\n",
				args[0], res.Template.Name, res.Digest, signed, res.Template.Name)
			return nil
		},
	}
	sf.register(cmd)
	cmd.Flags().BoolVar(&o.Replace, "replace", false, "replace a local template of the same name (refused while VMs use it)")
	cmd.Flags().BoolVar(&o.VerifyFiles, "verify-files", false, "also hash every rebuilt file against its signed SHA-256 (slower)")
	return cmd
}

func newTemplateVerifyCommand(g *globals) *cobra.Command {
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "verify REF|NAME",
		Short: "Check a template's signature against your trusted keys (and a pulled one's files)",
		Long: `Check a template's signature against your trusted keys. REF (with a '/')
is read from its store; NAME is a pulled local template, whose files are
checked against what was signed too. A missing or untrusted signature, or
any changed byte, fails with exit status 1.`,
		Args: exactArgs(1, "a reference or a local template name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := sf.options(g)
			if err != nil {
				return err
			}
			m, err := g.manager()
			if err != nil {
				return err
			}
			var res *vm.TemplateVerifyResult
			if strings.Contains(args[0], "/") {
				res, err = m.TemplateVerifyRef(cmd.Context(), args[0], vm.TemplateShareOptions{Store: o})
			} else {
				res, err = m.TemplateVerifyLocal(cmd.Context(), args[0])
			}
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, res)
			}
			fmt.Fprintf(g.stdout, "%s: signed by %s (%s)\n", res.Target, res.SignedBy, res.Digest)
			if res.Files > 0 {
				fmt.Fprintf(g.stdout, "%d files match what was signed", res.Files)
				if len(res.Adjusted) > 0 {
					fmt.Fprintf(g.stdout, "; %s rewritten for this host's paths on pull", strings.Join(res.Adjusted, ", "))
				}
				fmt.Fprintln(g.stdout)
			}
			return nil
		},
	}
	sf.register(cmd)
	return cmd
}

// byteBar is a one-line transfer progress bar on a terminal; nothing off
// one or with --json.
type byteBar struct {
	mu    sync.Mutex
	w     io.Writer
	on    bool
	last  time.Time
	width int
	// The current phase, when it began and the count it began at.
	phase artifact.Phase
	began time.Time
	from  int64
}

func newByteBar(g *globals) *byteBar {
	return &byteBar{w: g.stderr, on: !g.json && isTTY(g.stderr)}
}

func (b *byteBar) update(p artifact.Progress) {
	if !b.on {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if time.Since(b.last) < 100*time.Millisecond && p.Done < p.Total {
		return
	}
	b.last = time.Now()
	if p.Phase != b.phase {
		// Rate and ETA are per phase: packing, uploading and unpacking
		// move at very different speeds.
		b.phase, b.began, b.from = p.Phase, b.last, p.Done
	}
	eta := ""
	if el := b.last.Sub(b.began).Seconds(); el >= 1 && p.Done > b.from && p.Done < p.Total {
		rate := float64(p.Done-b.from) / el
		eta = fmt.Sprintf(" %s/s ETA %s", humanBytes(int64(rate)), time.Duration(float64(p.Total-p.Done)/rate*float64(time.Second)).Round(time.Second))
	}
	pct := 0
	if p.Total > 0 {
		pct = int(p.Done * 100 / p.Total)
	}
	const cells = 24
	fill := pct * cells / 100
	file := p.File
	if len(file) > 28 {
		file = "…" + file[len(file)-27:]
	}
	line := fmt.Sprintf("%-8s [%s%s] %3d%% %s/%s%s %s", p.Phase, strings.Repeat("=", fill), strings.Repeat(" ", cells-fill),
		pct, humanBytes(p.Done), humanBytes(p.Total), eta, file)
	pad := ""
	if n := b.width - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	b.width = len(line)
	fmt.Fprintf(b.w, "\r%s%s", line, pad)
}

func (b *byteBar) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.on && b.width > 0 {
		fmt.Fprintf(b.w, "\r%s\r", strings.Repeat(" ", b.width))
	}
	b.on = false
}
