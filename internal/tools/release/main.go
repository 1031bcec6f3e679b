// Command release builds, checks and signs mvm releases; the Makefile's
// release-build and release targets run it (go run ./internal/tools/release).
//
//	release build   -version V [-out dist] [-targets all|NAME,…] [-pin PUBFILE]
//	release release -version V [-out dist] [-key FILE] [-repro=false]
//	                (guard, build, rebuild from an empty cache and compare, SHA256SUMS, sign)
//	release verify  -pub FILE [-dir dist]                 (signature, then every checksum)
//	release guard   -version V
//
// The signing key is a private key file as `mvmctl key generate` writes it
// (<config>/keys/NAME.key), from -key or $MVM_RELEASE_KEY; the matching
// public key (`mvmctl key export NAME`) is what verify and users pin: a
// release links it into mvmctl, whose update then requires it (build takes
// one with -pin).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/mvm-dev/mvm/internal/release"
	"github.com/mvm-dev/mvm/internal/sign"
)

const usage = `usage:
  release build   -version V [-out dist] [-targets all|NAME,...] [-pin PUBFILE]
  release release -version V [-out dist] [-key FILE] [-repro=false]   (key: -key or $MVM_RELEASE_KEY)
  release verify  -pub FILE [-dir dist]
  release guard   -version V`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("release "+args[0], flag.ContinueOnError)
	version := fs.String("version", "", "release version, vX.Y.Z")
	out := fs.String("out", "dist", "output directory")
	targets := fs.String("targets", "all", "all, or target names separated by commas (mvmctl-linux-amd64,…)")
	keyPath := fs.String("key", os.Getenv("MVM_RELEASE_KEY"), "release signing key (PEM, from mvmctl key generate)")
	pubPath := fs.String("pub", "", "release public key (from mvmctl key export)")
	pinPath := fs.String("pin", "", "build: public key file to link into mvmctl as the key update requires")
	dir := fs.String("dir", "dist", "directory holding the release")
	repro := fs.Bool("repro", true, "release: rebuild everything from an empty build cache and refuse to sign unless the bytes match")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q\n%s", fs.Args(), usage)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	switch args[0] {
	case "build":
		// Snapshot builds (make release-build) take any version, git
		// describe's included; only release checks its form.
		if *version == "" {
			return errors.New("build: -version is required")
		}
		ts, err := release.ParseTargets(*targets)
		if err != nil {
			return err
		}
		var pin string
		if *pinPath != "" {
			b, err := os.ReadFile(*pinPath)
			if err != nil {
				return fmt.Errorf("build: -pin: %w", err)
			}
			pin = string(b)
		}
		_, _, err = buildAndSum(ctx, release.Options{Root: root, Out: *out, Version: *version, Targets: ts, PinnedKey: pin, Log: log})
		return err
	case "guard":
		facts, err := release.RepoFacts(ctx, root, *version)
		if err != nil {
			return err
		}
		return release.Guard(facts)
	case "release":
		if *keyPath == "" {
			return errors.New("release: no signing key: set MVM_RELEASE_KEY or -key to a private key file (mvmctl key generate NAME; <config>/keys/NAME.key)")
		}
		key, err := readKey(*keyPath)
		if err != nil {
			return err
		}
		facts, err := release.RepoFacts(ctx, root, *version)
		if err != nil {
			return err
		}
		if err := release.Guard(facts); err != nil {
			return err
		}
		// A stale artifact from an older build must not ride along.
		if err := os.RemoveAll(*out); err != nil {
			return err
		}
		pin, err := key.Public().MarshalText()
		if err != nil {
			return err
		}
		// The key that signs is the key the binaries require for updates.
		o := release.Options{Root: root, Out: *out, Version: *version, PinnedKey: string(pin), Log: log}
		arts, sums, err := buildAndSum(ctx, o)
		if err != nil {
			return err
		}
		if *repro {
			log.Info("rebuilding every target from an empty build cache to check reproducibility")
			if err := release.CheckReproducible(ctx, o, arts); err != nil {
				return err
			}
		}
		sig, err := sign.SignRelease(key, sums)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(*out, "SHA256SUMS.sig"), sig, 0o644); err != nil {
			return err
		}
		fmt.Printf("%s: signed by %s\n", filepath.Join(*out, "SHA256SUMS.sig"), key.Public().ID)
		return nil
	case "verify":
		if *pubPath == "" {
			return errors.New("verify: -pub is required")
		}
		b, err := os.ReadFile(*pubPath)
		if err != nil {
			return err
		}
		pub, err := sign.ParsePublicKey(b)
		if err != nil {
			return err
		}
		id, err := release.Verify(*dir, sign.NewKeySet(pub))
		if err != nil {
			return err
		}
		fmt.Printf("%s: every checksum matches, signed by %s\n", *dir, id)
		return nil
	}
	return fmt.Errorf("unknown subcommand %q\n%s", args[0], usage)
}

// buildAndSum builds the targets and writes SHA256SUMS beside them.
func buildAndSum(ctx context.Context, o release.Options) ([]release.Artifact, []byte, error) {
	arts, err := release.Build(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	sums := release.Sums(arts)
	if err := os.WriteFile(filepath.Join(o.Out, "SHA256SUMS"), sums, 0o644); err != nil {
		return nil, nil, err
	}
	os.Stdout.Write(sums)
	return arts, sums, nil
}

func readKey(path string) (*sign.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("release key: %w", err)
	}
	name := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	return sign.ParsePrivateKey(name, b)
}
