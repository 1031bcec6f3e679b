// Package audit keeps mvmctl's audit trail: one JSON line per state-changing
// command in <state>/audit/, each line chained to the one before it by the
// SHA-256 of that line's bytes, so that an edited, removed or reordered line
// (or file) is detected by Verify.
//
// Layout of the directory:
//
//	.lock                          flock(2) taken by every writer
//	audit.log                      the current file, appended to
//	audit-<UTC time>-<seq>.log     rotated files, oldest has the lowest seq
//
// A line is the canonical JSON encoding of a Record (fields in declaration
// order, no insignificant whitespace, HTML characters not escaped) followed
// by "\n". Prev is the hex SHA-256 of the previous line without its newline
// ("" for the very first line ever, in the oldest file); Hash is the hex
// SHA-256 of this line as it would be encoded with Hash set to "". The chain
// continues across rotation: the first line of a new file carries the hash
// of the last line of the file before it.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Record is one audited command.
type Record struct {
	Time   time.Time `json:"time"`   // UTC, RFC 3339 with nanoseconds
	UID    int       `json:"uid"`    // real uid of the process
	PID    int       `json:"pid"`    // pid of the process
	Verb   string    `json:"verb"`   // e.g. "up", "network create"
	Target string    `json:"target"` // VM, network or snapshot name; may be ""
	Args   []string  `json:"args"`   // argv after the binary, secrets redacted
	Result string    `json:"result"` // "ok" or "error: <message>"
	Exit   int       `json:"exit"`   // the process exit code
	Prev   string    `json:"prev"`   // hex SHA-256 of the previous line
	Hash   string    `json:"hash"`   // hex SHA-256 of this line with hash ""
}

// fieldNames are the JSON keys of a Record, in order; a line must have
// exactly these.
var fieldNames = []string{"time", "uid", "pid", "verb", "target", "args", "result", "exit", "prev", "hash"}

// MaxLineSize bounds the length of a line that DecodeLine accepts (and so of
// a record that Append writes).
const MaxLineSize = 1 << 20

// encode returns the canonical encoding of r, without a newline.
func encode(r Record) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return nil, fmt.Errorf("encode audit record: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// recordHash is the hex SHA-256 of r's encoding with Hash "".
func recordHash(r Record) (string, error) {
	r.Hash = ""
	b, err := encode(r)
	if err != nil {
		return "", err
	}
	return hashBytes(b), nil
}

// hashBytes is the hex SHA-256 of b.
func hashBytes(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// LineHash is the value the next line's Prev must have: the hex SHA-256 of
// line, without its trailing newline if it has one.
func LineHash(line []byte) string {
	return hashBytes(bytes.TrimSuffix(line, []byte("\n")))
}

// seal fills r.Hash and returns the line (without newline).
func seal(r *Record) ([]byte, error) {
	h, err := recordHash(*r)
	if err != nil {
		return nil, err
	}
	r.Hash = h
	return encode(*r)
}

// ErrNotCanonical is wrapped by DecodeLine's error when the line is valid
// JSON with the right fields but not the exact bytes Append writes (spacing,
// key order, escaping, duplicated keys, time zone).
var ErrNotCanonical = errors.New("not in canonical form")

// ErrHashMismatch is wrapped by DecodeLine's error when the line's hash does
// not match its contents: the line was edited.
var ErrHashMismatch = errors.New("record hash does not match its contents")

// DecodeLine decodes one line strictly (a trailing "\n" is allowed): it must
// be exactly the canonical encoding of a Record with every field present,
// a UTC time, hex hashes, and a hash that matches. It does not check Prev
// against anything; Verify does.
func DecodeLine(line []byte) (Record, error) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	if len(line) == 0 {
		return Record{}, errors.New("empty line")
	}
	if len(line) > MaxLineSize {
		return Record{}, fmt.Errorf("line longer than %d bytes", MaxLineSize)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(line, &keys); err != nil {
		return Record{}, fmt.Errorf("not a JSON object: %w", err)
	}
	for _, k := range fieldNames {
		if _, ok := keys[k]; !ok {
			return Record{}, fmt.Errorf("field %q missing", k)
		}
	}
	if len(keys) != len(fieldNames) {
		for k := range keys {
			if !slices.Contains(fieldNames, k) {
				return Record{}, fmt.Errorf("unknown field %q", k)
			}
		}
	}
	var r Record
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("bad field: %w", err)
	}
	if r.Time.Location() != time.UTC {
		return Record{}, fmt.Errorf("time %s is not UTC", r.Time.Format(time.RFC3339Nano))
	}
	if r.Verb == "" {
		return Record{}, errors.New("empty verb")
	}
	if r.Result != "ok" && !strings.HasPrefix(r.Result, "error: ") {
		return Record{}, fmt.Errorf("result %q is neither \"ok\" nor \"error: ...\"", r.Result)
	}
	if r.Prev != "" && !isHexHash(r.Prev) {
		return Record{}, fmt.Errorf("prev %q is not a hex SHA-256", r.Prev)
	}
	if !isHexHash(r.Hash) {
		return Record{}, fmt.Errorf("hash %q is not a hex SHA-256", r.Hash)
	}
	canon, err := encode(r)
	if err != nil {
		return Record{}, err
	}
	if !bytes.Equal(canon, line) {
		return Record{}, ErrNotCanonical
	}
	want, err := recordHash(r)
	if err != nil {
		return Record{}, err
	}
	if want != r.Hash {
		return Record{}, ErrHashMismatch
	}
	return r, nil
}

func isHexHash(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
