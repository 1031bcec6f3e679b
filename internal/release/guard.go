package release

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// The deploy guard: a release goes out only when every place that names its
// version agrees — the VERSION argument, the VERSION file, the top entry of
// CHANGELOG.md and, when HEAD is tagged, the tag — so a release can never
// ship under one number and describe another.

// Facts are what the guard compares.
type Facts struct {
	Version     string   // the version asked for (vX.Y.Z)
	VersionFile string   // contents of the VERSION file
	Changelog   []byte   // contents of CHANGELOG.md
	Tags        []string // tags pointing at HEAD
	Dirty       []string // uncommitted paths: the bytes would not be the commit's
}

// headingRE is a Keep a Changelog entry heading: "## [1.2.3] - 2026-12-07"
// or "## [Unreleased]".
var headingRE = regexp.MustCompile(`^## \[([^\]]+)\]`)

// Guard returns nil when the facts agree and otherwise an error naming each
// disagreement and how to fix it.
func Guard(f Facts) error {
	if err := CheckVersion(f.Version); err != nil {
		return err
	}
	want := strings.TrimPrefix(f.Version, "v")
	var errs []error
	file := strings.TrimSpace(f.VersionFile)
	if strings.TrimPrefix(file, "v") != want {
		errs = append(errs, fmt.Errorf("VERSION file says %q, the release is %s: set it to %s", file, f.Version, want))
	}
	top, unreleased, err := topEntry(f.Changelog)
	switch {
	case err != nil:
		errs = append(errs, err)
	case strings.TrimPrefix(top, "v") != want:
		errs = append(errs, fmt.Errorf("CHANGELOG.md's top entry is [%s], the release is %s: add a \"## [%s] - YYYY-MM-DD\" entry above it", top, f.Version, want))
	}
	if unreleased {
		errs = append(errs, fmt.Errorf("CHANGELOG.md's Unreleased section still lists changes: move them under [%s]", want))
	}
	for _, t := range f.Tags {
		if t != f.Version && strings.HasPrefix(t, "v") {
			errs = append(errs, fmt.Errorf("HEAD is tagged %s, the release is %s", t, f.Version))
		}
	}
	if len(f.Dirty) > 0 {
		errs = append(errs, fmt.Errorf("the work tree has uncommitted changes (%s): a release is built from a commit", strings.Join(f.Dirty, ", ")))
	}
	if len(errs) > 0 {
		return fmt.Errorf("release %s refused:\n%w", f.Version, errors.Join(errs...))
	}
	return nil
}

// topEntry is the version of the first changelog entry other than
// Unreleased, and whether the Unreleased section holds anything but blank
// lines.
func topEntry(changelog []byte) (version string, unreleased bool, err error) {
	sc := bufio.NewScanner(bytes.NewReader(changelog))
	inUnreleased := false
	for sc.Scan() {
		line := sc.Text()
		if m := headingRE.FindStringSubmatch(line); m != nil {
			if strings.EqualFold(m[1], "unreleased") {
				inUnreleased = true
				continue
			}
			return m[1], unreleased, nil
		}
		if inUnreleased && strings.TrimSpace(line) != "" && !strings.HasPrefix(line, "[") {
			// Link reference lines ("[unreleased]: …") are not changes.
			unreleased = true
		}
	}
	if err := sc.Err(); err != nil {
		return "", false, fmt.Errorf("CHANGELOG.md: %w", err)
	}
	return "", unreleased, errors.New("CHANGELOG.md has no released entry (\"## [X.Y.Z] - YYYY-MM-DD\")")
}

// RepoFacts reads the facts of the repository at root for version.
func RepoFacts(ctx context.Context, root, version string) (Facts, error) {
	f := Facts{Version: version}
	b, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		return f, fmt.Errorf("release guard: %w", err)
	}
	f.VersionFile = string(b)
	if f.Changelog, err = os.ReadFile(filepath.Join(root, "CHANGELOG.md")); err != nil {
		return f, fmt.Errorf("release guard: %w", err)
	}
	cmd := exec.CommandContext(ctx, "git", "tag", "--points-at", "HEAD")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return f, fmt.Errorf("release guard: git tag --points-at HEAD: %w", err)
	}
	f.Tags = strings.Fields(string(out))
	cmd = exec.CommandContext(ctx, "git", "status", "--porcelain")
	cmd.Dir = root
	if out, err = cmd.Output(); err != nil {
		return f, fmt.Errorf("release guard: git status: %w", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if len(line) > 3 {
			f.Dirty = append(f.Dirty, line[3:])
		}
	}
	return f, nil
}
