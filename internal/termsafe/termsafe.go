// Package termsafe renders untrusted text (anything a guest wrote) so that it
// can be printed on the host's terminal without being interpreted by it.
//
// Printable characters, the space and the tab pass through unchanged; every
// other character is written as a visible Go escape, as strconv.Quote would
// write it but without the surrounding quotes: ESC becomes \x1b, the C1
// control U+009B becomes \u009b, a byte that is not valid UTF-8 becomes \xff,
// the bidi override U+202E becomes \u202e. No control sequence (CSI, OSC,
// DCS...) can then reach the terminal, and the user still sees what was sent.
//
// Backslashes are not escaped, so guest text that spells "\x1b" literally
// looks like an escaped ESC; that is ambiguous but harmless.
//
// Use it only for text output: JSON output is already escaped by
// encoding/json, and the exec, console and serial log streams are raw by
// design.
package termsafe

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// String returns s safe to print on one line: newlines are escaped as \n too,
// so a guest cannot forge extra lines (a diff entry, a table row).
func String(s string) string { return render(s, false) }

// Text returns s safe to print where the output is multi-line by design (an
// error message with hints or log lines): like String, but newlines are
// kept. Carriage returns are still escaped.
func Text(s string) string { return render(s, true) }

func render(s string, keepNewline bool) string {
	if isClean(s, keepNewline) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			// Not UTF-8: show the byte itself.
			writeHex(&b, `\x`, uint32(s[i]), 2)
		case keep(r, keepNewline):
			b.WriteString(s[i : i+size])
		default:
			writeEscape(&b, r)
		}
		i += size
	}
	return b.String()
}

// isClean reports, cheaply, whether s is printable ASCII (plus the allowed
// whitespace) and so needs no work.
func isClean(s string, keepNewline bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < ' ' || c >= 0x7f) && c != '\t' && (c != '\n' || !keepNewline) {
			return false
		}
	}
	return true
}

func keep(r rune, keepNewline bool) bool {
	switch {
	case r == ' ' || r == '\t':
		return true
	case r == '\n':
		return keepNewline
	case isBidiControl(r):
		// Not printable anyway (category Cf), but say so explicitly: these
		// reorder the text around them and can disguise a file name.
		return false
	}
	// Letters, marks, numbers, punctuation and symbols. This excludes C0,
	// DEL, C1, the other format characters (zero-width ones included) and
	// the separators U+2028 and U+2029.
	return unicode.IsPrint(r)
}

// isBidiControl reports the embedding, override and isolate controls
// U+202A..U+202E and U+2066..U+2069.
func isBidiControl(r rune) bool {
	return (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

func writeEscape(b *strings.Builder, r rune) {
	switch r {
	case '\a':
		b.WriteString(`\a`)
	case '\b':
		b.WriteString(`\b`)
	case '\f':
		b.WriteString(`\f`)
	case '\n':
		b.WriteString(`\n`)
	case '\r':
		b.WriteString(`\r`)
	case '\t':
		b.WriteString(`\t`)
	case '\v':
		b.WriteString(`\v`)
	default:
		switch {
		case r < 0x80:
			writeHex(b, `\x`, uint32(r), 2)
		case r <= 0xffff:
			writeHex(b, `\u`, uint32(r), 4)
		default:
			writeHex(b, `\U`, uint32(r), 8)
		}
	}
}

func writeHex(b *strings.Builder, prefix string, v uint32, digits int) {
	b.WriteString(prefix)
	for shift := 4 * (digits - 1); shift >= 0; shift -= 4 {
		b.WriteByte(hexDigits[(v>>uint(shift))&0xf])
	}
}
