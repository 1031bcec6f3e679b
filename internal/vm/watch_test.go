package vm

import (
	"reflect"
	"testing"
	"time"
)

func TestTransitions(t *testing.T) {
	now := time.Unix(1, 0)
	before := map[string]string{"a": "running", "b": "running", "gone": "stopped"}
	after := map[string]string{"a": "running", "b": "failed", "new": "creating"}
	got := transitions(before, after, map[string]string{"b": "qemu exited"}, now)
	want := []StateChange{
		{Time: now, VM: "b", From: "running", To: "failed", Reason: "qemu exited"},
		{Time: now, VM: "gone", From: "stopped"},
		{Time: now, VM: "new", To: "creating"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	kinds := []string{"failed", "removed", "created"}
	for i, c := range got {
		if c.Kind() != kinds[i] {
			t.Errorf("%s: kind %q, want %q", c.VM, c.Kind(), kinds[i])
		}
	}
	if got := transitions(after, after, nil, now); len(got) != 0 {
		t.Fatalf("no change reported %+v", got)
	}
}
