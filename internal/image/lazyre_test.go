package image

import "testing"

func TestLazyRegexp(t *testing.T) {
	re := lazyRE(`^[a-z]+$`)
	if !re.MatchString("abc") || re.MatchString("ab1") {
		t.Fatal("MatchString")
	}
	if got := lazyRE(`[^a-z]+`).ReplaceAllString("a1b22c", "-"); got != "a-b-c" {
		t.Fatalf("ReplaceAllString = %q", got)
	}
	if re.String() != `^[a-z]+$` {
		t.Fatalf("String = %q", re.String())
	}
}
