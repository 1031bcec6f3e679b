package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/mvm-dev/mvm/internal/paths"
	"github.com/mvm-dev/mvm/internal/sign"
)

// Generating, trusting and untrusting keys decide whose templates this host
// runs, so they go in the audit trail; list and export only read. Added
// here rather than in audit.go so that the key verbs are one file.
func init() {
	for _, v := range []string{"key generate", "key trust", "key untrust"} {
		auditedVerbs[v] = true
	}
}

const defaultKeyName = "default"

func newKeyCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Manage the keys that sign templates and the keys trusted to verify them",
		Long: `Templates pushed to a registry or bucket are signed with one of your keys
(<config>/keys/NAME.key); templates pulled are checked against the public
keys you trust (<config>/trusted-keys/). The [trust] table of config.toml
says which stores must serve signed templates. See docs/signing.md.`,
		Args: exactArgs(0, "a subcommand"),
	}
	cmd.AddCommand(newKeyGenerateCommand(g), newKeyListCommand(g), newKeyExportCommand(g),
		newKeyTrustCommand(g), newKeyUntrustCommand(g))
	return cmd
}

// keyItem is one key in list, generate and export output.
type keyItem struct {
	Kind      string `json:"kind"` // "own" or "trusted"
	Name      string `json:"name,omitempty"`
	ID        string `json:"id"`
	File      string `json:"file,omitempty"`
	Trusted   bool   `json:"trusted"` // verifies on this host
	PublicKey string `json:"public_key,omitempty"`
}

// keyring needs only the config root, not a config that parses: fixing a
// broken config.toml should not lock anyone out of their keys.
func keyring(g *globals) (*sign.Keyring, error) {
	if g.dirs.Config != "" {
		return sign.NewKeyring(g.dirs.Config), nil
	}
	dirs, err := paths.Resolve()
	if err != nil {
		return nil, err
	}
	return sign.NewKeyring(dirs.Config), nil
}

// optionalName is the [NAME] argument: none (the default key) or one.
func optionalName(args []string) string {
	if len(args) == 1 {
		return args[0]
	}
	return defaultKeyName
}

func atMostOneArg(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > 1 {
			return usageError{fmt.Errorf("%s takes at most %s (got %d arguments)", cmd.CommandPath(), what, len(args))}
		}
		return nil
	}
}

func newKeyGenerateCommand(g *globals) *cobra.Command {
	var noTrust bool
	cmd := &cobra.Command{
		Use:   "generate [NAME] [--no-trust]",
		Short: "Create a signing key (named \"default\" unless NAME is given)",
		Long: `Create an Ed25519 signing key: <config>/keys/NAME.key (mode 0600) and its
public half NAME.pub. An existing key is never replaced. The new key is also
trusted on this host, so templates you push verify when you pull them back;
--no-trust skips that. Prints the key's ID.`,
		Example: `  mvmctl key generate
  mvmctl key generate ci --no-trust`,
		Args: atMostOneArg("one key name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := optionalName(args)
			kr, err := keyring(g)
			if err != nil {
				return err
			}
			pub, err := kr.Generate(name)
			if err != nil {
				return err
			}
			if !noTrust {
				if _, err := kr.Trust(pub); err != nil {
					return fmt.Errorf("key %s created, but trusting it failed: %w", name, err)
				}
			}
			if g.json {
				return writeJSON(g.stdout, keyItem{Kind: "own", Name: name, ID: pub.ID, File: kr.PublicPath(name), Trusted: !noTrust})
			}
			fmt.Fprintln(g.stdout, pub.ID)
			fmt.Fprintf(g.stderr, "Key %s (%s): private %s, public %s.\n", name, pub.ID, kr.PrivatePath(name), kr.PublicPath(name))
			fmt.Fprintf(g.stderr, "Give the public key to whoever pulls your templates: 'mvmctl key export %s' > %s.pub, then 'mvmctl key trust %s.pub' on their side.\n", name, name, name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&noTrust, "no-trust", false, "do not trust the new key on this host")
	return cmd
}

func newKeyListCommand(g *globals) *cobra.Command {
	var f listFormat
	return withFormat(g, &cobra.Command{
		Use:   "list",
		Short: "List your signing keys and the keys trusted to verify templates",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			kr, err := keyring(g)
			if err != nil {
				return err
			}
			own, err := kr.Own()
			if err != nil {
				return err
			}
			list, err := kr.Trusted()
			if err != nil {
				return err
			}
			trusted := sign.NewKeySet(list...)
			items := []keyItem{}
			for _, p := range own {
				_, ok := trusted[p.ID]
				items = append(items, keyItem{Kind: "own", Name: p.Name, ID: p.ID, File: kr.PrivatePath(p.Name), Trusted: ok})
			}
			for _, p := range list {
				items = append(items, keyItem{Kind: "trusted", Name: p.Name, ID: p.ID, Trusted: true})
			}
			if g.json {
				return writeJSON(g.stdout, items)
			}
			if f.set() {
				return f.write(g.stdout, items)
			}
			if len(items) == 0 {
				fmt.Fprintln(g.stderr, "No keys. Create one with 'mvmctl key generate', trust someone's with 'mvmctl key trust FILE'.")
				return nil
			}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "KIND\tNAME\tID")
			for _, it := range items {
				name := it.Name
				if name == "" {
					name = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", it.Kind, name, it.ID)
			}
			return tw.Flush()
		},
	}, &f, keyItem{})
}

func newKeyExportCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "export [NAME]",
		Short: "Print a key's public key file, for others to trust",
		Example: `  mvmctl key export > me.pub
  mvmctl key export ci | ssh build-host mvmctl key trust -`,
		Args: atMostOneArg("one key name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := optionalName(args)
			kr, err := keyring(g)
			if err != nil {
				return err
			}
			pub, err := kr.Public(name)
			if err != nil {
				return err
			}
			text, err := pub.MarshalText()
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, keyItem{Kind: "own", Name: name, ID: pub.ID, File: kr.PublicPath(name), PublicKey: string(text)})
			}
			_, err = g.stdout.Write(text)
			return err
		},
	}
}

func newKeyTrustCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "trust FILE|-",
		Short: "Trust a public key to verify templates (from a file, or - for stdin)",
		Long: `Add a public key file (as 'mvmctl key export' prints it) to the keys that
verify pulled templates, and print its ID. Compare that ID with the one its
owner sees in 'mvmctl key list' before relying on it: whoever handed you the
file could have handed you their own.`,
		Example: `  mvmctl key trust alice.pub
  curl -fsS https://example.com/release.pub | mvmctl key trust -`,
		Args: exactArgs(1, "one public key file (or - for stdin)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := readKeyArg(g, args[0])
			if err != nil {
				return err
			}
			pub, err := sign.ParsePublicKey(b)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			kr, err := keyring(g)
			if err != nil {
				return err
			}
			added, err := kr.Trust(pub)
			if err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, struct {
					keyItem
					Added bool `json:"added"`
				}{keyItem{Kind: "trusted", Name: pub.Name, ID: pub.ID, Trusted: true}, added})
			}
			fmt.Fprintln(g.stdout, pub.ID)
			switch {
			case !added:
				fmt.Fprintf(g.stderr, "Key %s was trusted already.\n", pub.ID)
			default:
				label := pub.Name
				if label == "" {
					label = "(unnamed)"
				}
				fmt.Fprintf(g.stderr, "Trusted %s %s. Check the ID with its owner; 'mvmctl key untrust %s' undoes this.\n", label, pub.ID, pub.ID)
			}
			return nil
		},
	}
}

// readKeyArg reads FILE, or stdin for "-", at most a key file's size.
func readKeyArg(g *globals, arg string) ([]byte, error) {
	var r io.Reader = g.stdin
	if arg != "-" {
		f, err := os.Open(arg)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := sign.ReadLimited(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", arg, err)
	}
	if len(b) == 0 {
		return nil, errors.New("read " + arg + ": empty, want a public key file")
	}
	return b, nil
}

func newKeyUntrustCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "untrust ID",
		Short:   "Stop trusting a public key (ID as 'mvmctl key list' prints it)",
		Example: `  mvmctl key untrust ed25519:3f9a0c1d2b4e5f60`,
		Args:    exactArgs(1, "one key ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			kr, err := keyring(g)
			if err != nil {
				return err
			}
			if err := kr.Untrust(args[0]); err != nil {
				return err
			}
			if g.json {
				return writeJSON(g.stdout, struct {
					ID      string `json:"id"`
					Removed bool   `json:"removed"`
				}{args[0], true})
			}
			fmt.Fprintln(g.stdout, args[0])
			return nil
		},
	}
}
