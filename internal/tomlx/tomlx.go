// Package tomlx decodes TOML strictly for every file users write (config.toml,
// VM config files, image recipes): an unknown key or a value of the wrong
// type is an error that names the file, the line and the key.
package tomlx

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Decode decodes b into v, refusing unknown keys. path names the source in
// errors; hint (may be empty) is appended to unknown-key errors, e.g. where
// the known keys are documented.
func Decode(path string, b []byte, v any, hint string) error {
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Describe(path, err, hint)
	}
	return nil
}

// Describe turns a go-toml error into "file:line: key: problem".
func Describe(path string, err error, hint string) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		var parts []string
		for _, e := range strict.Errors {
			row, _ := e.Position()
			parts = append(parts, fmt.Sprintf("%s:%d: unknown key %q", path, row, strings.Join(e.Key(), ".")))
		}
		msg := strings.Join(parts, "; ")
		if hint != "" {
			msg += " (" + hint + ")"
		}
		return errors.New(msg)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		if key := strings.Join(de.Key(), "."); key != "" {
			return fmt.Errorf("%s:%d: key %q: %s", path, row, key, de.Error())
		}
		return fmt.Errorf("%s:%d: %s", path, row, de.Error())
	}
	return fmt.Errorf("%s: %w", path, err)
}
