package image

import "testing"

func TestStageLabel(t *testing.T) {
	for in, want := range map[string]string{"kernel": "[1/4] kernel", "rootfs": "[3/4] rootfs", "finalize": "[4/4] finalize", "cached": "cached", "nix build .#x": "nix build .#x"} {
		if got := StageLabel(in); got != want {
			t.Errorf("StageLabel(%q) = %q, want %q", in, got, want)
		}
	}
}
