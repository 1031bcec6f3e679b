package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/template"

	"github.com/spf13/cobra"
)

// listFormat is a listing's --format: a Go template run once per item, on
// the item as --json prints it, with a json function for whole values
// ('{{json .}}', '{{json .Ports}}'). "json" alone means --json.
type listFormat struct {
	src string
	t   *template.Template
}

// withFormat adds --format to a listing whose items have type item (for
// the help text's field list); RunE sees it parsed.
func withFormat(g *globals, cmd *cobra.Command, f *listFormat, item any) *cobra.Command {
	cmd.Flags().StringVar(&f.src, "format", "", fmt.Sprintf("Go template per item, e.g. '{{.%s}}', or 'json' (fields: %s)", firstField(item), strings.Join(fieldNames(item), ", ")))
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if err := f.parse(g); err != nil {
			return err
		}
		return run(c, args)
	}
	return cmd
}

func (f *listFormat) parse(g *globals) error {
	switch {
	case f.src == "":
		return nil
	case f.src == "json":
		g.json, f.src = true, ""
		return nil
	case g.json:
		return usageError{errors.New("--format and --json do not go together: pick one")}
	}
	t, err := template.New("format").Option("missingkey=error").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
	}).Parse(f.src + "\n")
	if err != nil {
		return usageError{fmt.Errorf("--format: %w", err)}
	}
	f.t = t
	return nil
}

// set says whether items are to be written with the template.
func (f *listFormat) set() bool { return f != nil && f.t != nil }

// write runs the template on each element of items (a slice).
func (f *listFormat) write(w io.Writer, items any) error {
	v := reflect.ValueOf(items)
	for i := 0; i < v.Len(); i++ {
		if err := f.t.Execute(w, v.Index(i).Interface()); err != nil {
			return usageError{fmt.Errorf("--format: %w", err)}
		}
	}
	return nil
}

// fieldNames lists the exported fields of item's struct type, embedded
// ones flattened, as a template can name them.
func fieldNames(item any) []string {
	t := reflect.TypeOf(item)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	if t.Kind() != reflect.Struct {
		return out
	}
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		switch {
		case sf.Anonymous:
			out = append(out, fieldNames(reflect.Zero(sf.Type).Interface())...)
		case sf.IsExported():
			out = append(out, sf.Name)
		}
	}
	return out
}

func firstField(item any) string {
	if n := fieldNames(item); len(n) > 0 {
		return n[0]
	}
	return "."
}
