package termsafe

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"plain ASCII", "/etc/passwd", "/etc/passwd"},
		{"space and tab kept", "a b\tc", "a b\tc"},
		{"accented kept", "café", "café"},
		{"CJK kept", "日本", "日本"},
		{"emoji kept", "ok 👍", "ok 👍"},
		{"ESC", "a\x1bb", `a\x1bb`},
		{"BEL", "\a", `\a`},
		{"NUL", "a\x00b", `a\x00b`},
		{"CR", "ok\rFAIL", `ok\rFAIL`},
		{"newline escaped", "a\nb", `a\nb`},
		{"backspace", "x\b", `x\b`},
		{"DEL", "a\x7fb", `a\x7fb`},
		{"CSI as C1 U+009B", "\u009b2J", `\u009b2J`},
		{"OSC as C1 U+009D", "\u009d52;c;QQ==\a", `\u009d52;c;QQ==\a`},
		{"C1 range start and end", "\u0080\u009f", `\u0080\u009f`},
		{"7-bit CSI clear screen", "\x1b[2J\x1b[H", `\x1b[2J\x1b[H`},
		{"OSC 52 clipboard write", "\x1b]52;c;ZWNobyBwd25lZA==\a", `\x1b]52;c;ZWNobyBwd25lZA==\a`},
		{"OSC 52 with ST", "\x1b]52;c;QQ==\x1b\\", `\x1b]52;c;QQ==\x1b\`},
		{"invalid UTF-8 byte", "a\xffb", `a\xffb`},
		{"raw C1 byte (not UTF-8)", "\x9b2J", `\x9b2J`},
		{"truncated UTF-8", "\xe6\x97", `\xe6\x97`},
		{"RLO disguises extension", "invoice\u202etxt.exe", `invoice\u202etxt.exe`},
		{"all embedding and override controls", "\u202a\u202b\u202c\u202d\u202e", `\u202a\u202b\u202c\u202d\u202e`},
		{"isolates", "\u2066\u2067\u2068\u2069", `\u2066\u2067\u2068\u2069`},
		{"line separator", "a\u2028b", `a\u2028b`},
		{"zero width space", "a\u200bb", `a\u200bb`},
		{"backslash kept", `C:\x`, `C:\x`},
		{"U+FFFD as text kept", "\ufffd", "\ufffd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := String(tt.in); got != tt.want {
				t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestText(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"newline kept", "line 1\nline 2\n", "line 1\nline 2\n"},
		{"tab kept", "a\tb", "a\tb"},
		{"CR escaped", "a\r\nb", "a\\r\nb"},
		{"ESC escaped across lines", "x\n\x1b]52;c;QQ==\a\n", "x\n\\x1b]52;c;QQ==\\a\n"},
		{"C1 escaped", "\u009b31m", `\u009b31m`},
		{"unicode kept", "é\n日本", "é\n日本"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Text(tt.in); got != tt.want {
				t.Errorf("Text(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// Every escape is the one strconv.Quote writes for that character.
func TestEscapesMatchStrconv(t *testing.T) {
	for _, r := range []rune{0, 7, 8, 9, 10, 11, 12, 13, 0x1b, 0x1f, 0x7f, 0x80, 0x9b, 0x9f, 0x202e, 0x2069, 0x2028, 0xfeff, 0xe0001} {
		var b strings.Builder
		writeEscape(&b, r)
		q := strconv.QuoteRune(r)
		if want := q[1 : len(q)-1]; b.String() != want {
			t.Errorf("escape of %U = %s, strconv says %s", r, b.String(), want)
		}
	}
}

// The output of String never holds a control character, a bidi control or
// invalid UTF-8, whatever the input.
func FuzzString(f *testing.F) {
	for _, s := range []string{"", "a", "\x1b]52;c;QQ==\a", "\u009b2J", "\xff\xfe", "\u202e", "é\n\t日本", "\r\x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, c := range []struct {
			name    string
			out     string
			newline bool
		}{{"String", String(s), false}, {"Text", Text(s), true}} {
			if !utf8.ValidString(c.out) {
				t.Fatalf("%s(%q) = %q: not UTF-8", c.name, s, c.out)
			}
			for _, r := range c.out {
				bad := (r < 0x20 && r != '\t' && (r != '\n' || !c.newline)) ||
					(r >= 0x7f && r <= 0x9f) || isBidiControl(r)
				if bad {
					t.Fatalf("%s(%q) = %q: holds %U", c.name, s, c.out, r)
				}
			}
		}
	})
}
