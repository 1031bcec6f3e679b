package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// migrationServer fakes a QEMU whose migration reports statuses in turn, and
// records the arguments of every command.
func migrationServer(t *testing.T, statuses []string) (string, func() map[string]string) {
	var mu sync.Mutex
	args := map[string]string{}
	n := 0
	sock := fakeServer(t, func(cmd map[string]any, w func(string)) {
		id := idOf(cmd)
		name := cmd["execute"].(string)
		b, _ := json.Marshal(cmd["arguments"])
		mu.Lock()
		args[name] = string(b)
		mu.Unlock()
		switch name {
		case "query-migrate":
			if n >= len(statuses) {
				n = len(statuses) - 1
			}
			s := statuses[n]
			n++
			switch s {
			case "":
				w(`{"return": {}, "id": ` + id + `}`)
			case "failed":
				w(`{"return": {"status": "failed", "error-desc": "disk full"}, "id": ` + id + `}`)
			default:
				w(`{"return": {"status": "` + s + `", "total-time": 7, "ram": {"transferred": 10, "remaining": 0, "total": 10}}, "id": ` + id + `}`)
			}
		default:
			w(`{"return": {}, "id": ` + id + `}`)
		}
	})
	return sock, func() map[string]string {
		mu.Lock()
		defer mu.Unlock()
		return args
	}
}

func TestSaveCommandsAndWait(t *testing.T) {
	sock, args := migrationServer(t, []string{"", "none", "setup", "active", "completed"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetMigrationCapability(ctx, "events", true); err != nil {
		t.Fatal(err)
	}
	if err := c.SetMigrationMaxBandwidth(ctx, 1<<40); err != nil {
		t.Fatal(err)
	}
	if err := c.Migrate(ctx, FdURI("state")); err != nil {
		t.Fatal(err)
	}
	m, err := c.WaitMigration(ctx, time.Millisecond)
	if err != nil || m.Status != "completed" || !m.Done() || m.RAM == nil || m.RAM.Total != 10 {
		t.Fatalf("info = %+v, %v", m, err)
	}
	got := args()
	want := map[string]string{
		"migrate-set-capabilities": `{"capabilities":[{"capability":"events","state":true}]}`,
		"migrate-set-parameters":   `{"max-bandwidth":1099511627776}`,
		"migrate":                  `{"uri":"fd:state"}`,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s args = %s, want %s", k, got[k], v)
		}
	}
}

func TestWaitMigrationFailsAndTimesOut(t *testing.T) {
	sock, _ := migrationServer(t, []string{"active", "failed"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WaitMigration(ctx, time.Millisecond); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v", err)
	}

	sock, _ = migrationServer(t, []string{"active"})
	c2, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	// The deadline ends either the wait between polls or a poll itself.
	if _, err := c2.WaitMigration(short, 5*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}
