package proto

import (
	"fmt"
	"regexp"
	"strings"
)

// OpSecrets (declared with the other ops) installs the VM's secrets: the
// host sends the whole set after boot, over the authenticated channel, and
// the agent writes it into a fresh tmpfs at SecretsDir, replacing whatever
// an earlier call put there. An empty set removes every secret and
// unmounts the tmpfs (before a snapshot). Secrets never touch the config
// drive, a disk, or the host's disk.

// SecretsDir is where the guest finds its secrets, one file per name.
const SecretsDir = "/run/secrets"

// Limits of one OpSecrets request. The whole request travels in one
// request frame (MaxFrame, 1 MiB) as JSON, where bytes are base64: the
// total is kept well below 3/4 of the frame.
const (
	MaxSecrets      = 128
	MaxSecretSize   = 64 << 10
	MaxSecretsTotal = 512 << 10
	MaxSecretName   = 64
	// DefaultSecretMode is a secret file's mode unless the request sets one.
	DefaultSecretMode = 0o400
	// allowedSecretMode: owner read (and write), group read; nothing else.
	allowedSecretMode = 0o640
	maxSecretUser     = 256
)

// Storage kinds of SecretsResult.Storage.
const (
	// SecretsTmpfs: a tmpfs of the agent's own mounted at SecretsDir.
	SecretsTmpfs = "tmpfs"
	// SecretsShm: the agent could not mount (a container without
	// CAP_SYS_ADMIN); the files are in a 0700 directory of its own on the
	// container's /dev/shm tmpfs (memory, not a host bind mount), and
	// SecretsDir is a symlink to it.
	SecretsShm = "shm"
)

var secretNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// ValidateSecretName checks a secret's name: 1-64 characters of A-Z, a-z,
// 0-9, '_', '.' and '-', and never "." or anything with "..". The name is
// a file name in SecretsDir, so it must not be able to leave it.
func ValidateSecretName(name string) error {
	if !secretNameRE.MatchString(name) || name == "." || strings.Contains(name, "..") {
		return fmt.Errorf("secret name %q: use 1-%d characters of A-Z, a-z, 0-9, '_', '.' and '-' (not '.' or '..')", name, MaxSecretName)
	}
	return nil
}

// Secret is one file of SecretsDir.
type Secret struct {
	Name string `json:"name"`
	Data []byte `json:"data"`
	// Mode is the file's permission bits, a subset of 0640 with owner read;
	// 0 means DefaultSecretMode (0400).
	Mode uint32 `json:"mode,omitempty"`
	// User owns the file, resolved in the guest like exec's user ("name",
	// "uid", "name:group", "uid:gid"). Empty: the image's user (the one
	// its services run as, when they agree on one), else root.
	User string `json:"user,omitempty"`
}

// String never shows the value, so a Secret that reaches a log or an error
// by mistake gives away its name and size only.
func (s Secret) String() string { return fmt.Sprintf("secret %s (%d bytes)", s.Name, len(s.Data)) }

// GoString is String for %#v.
func (s Secret) GoString() string { return s.String() }

// SecretsRequest is OpSecrets' argument: the complete set of secrets.
type SecretsRequest struct {
	Secrets []Secret `json:"secrets"`
}

// Names lists the request's secret names in order.
func (r *SecretsRequest) Names() []string {
	out := make([]string, len(r.Secrets))
	for i, s := range r.Secrets {
		out[i] = s.Name
	}
	return out
}

// Wipe overwrites every value with zeros: the caller is done with them.
func (r *SecretsRequest) Wipe() {
	for _, s := range r.Secrets {
		clear(s.Data)
	}
}

// Validate checks a request from the wire and fills in default modes.
// Errors name secrets, never their values.
func (r *SecretsRequest) Validate() error {
	if len(r.Secrets) > MaxSecrets {
		return fmt.Errorf("%d secrets, at most %d", len(r.Secrets), MaxSecrets)
	}
	seen := make(map[string]bool, len(r.Secrets))
	total := 0
	for i := range r.Secrets {
		s := &r.Secrets[i]
		if err := ValidateSecretName(s.Name); err != nil {
			return err
		}
		if seen[s.Name] {
			return fmt.Errorf("secret %s: given twice", s.Name)
		}
		seen[s.Name] = true
		if len(s.Data) > MaxSecretSize {
			return fmt.Errorf("secret %s: %d bytes, at most %d", s.Name, len(s.Data), MaxSecretSize)
		}
		if total += len(s.Data); total > MaxSecretsTotal {
			return fmt.Errorf("secrets: %d bytes in all, at most %d", total, MaxSecretsTotal)
		}
		if s.Mode == 0 {
			s.Mode = DefaultSecretMode
		}
		if s.Mode&^allowedSecretMode != 0 || s.Mode&0o400 == 0 {
			return fmt.Errorf("secret %s: mode %04o: want owner read and at most 0640", s.Name, s.Mode)
		}
		if len(s.User) > maxSecretUser || strings.ContainsFunc(s.User, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
			return fmt.Errorf("secret %s: invalid user %q", s.Name, s.User)
		}
	}
	return nil
}

// ParseSecrets decodes and validates OpSecrets' args strictly. Empty args
// are the empty set.
func ParseSecrets(b []byte) (SecretsRequest, error) {
	var r SecretsRequest
	if len(b) == 0 {
		return r, nil
	}
	if err := decodeStrict(b, &r); err != nil {
		// A JSON syntax error quotes no input; a type error names a field.
		return SecretsRequest{}, fmt.Errorf("secrets args: %w", err)
	}
	return r, r.Validate()
}

// SecretFile is one installed secret as the agent reports it.
type SecretFile struct {
	Name string `json:"name"`
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	Mode uint32 `json:"mode"`
	Size int    `json:"size"`
}

// SecretsResult answers OpSecrets.
type SecretsResult struct {
	// Dir is where the guest reads the secrets (SecretsDir).
	Dir string `json:"dir"`
	// Storage is SecretsTmpfs or SecretsShm; empty when the set was empty
	// and nothing is left.
	Storage string `json:"storage,omitempty"`
	// Note explains a fallback or an ownership choice, for the user.
	Note  string       `json:"note,omitempty"`
	Files []SecretFile `json:"files,omitempty"`
	// Removed counts the files of an earlier call that were zeroed and
	// deleted first.
	Removed int `json:"removed"`
}
