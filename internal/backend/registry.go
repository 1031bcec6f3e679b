package backend

import (
	"fmt"
	"sort"
	"sync"
)

var (
	mu       sync.RWMutex
	registry = map[string]Backend{}
)

// Register makes a backend available by name. Backends call it from init.
func Register(b Backend) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := registry[b.Name()]; dup {
		panic("backend registered twice: " + b.Name())
	}
	registry[b.Name()] = b
}

// Get returns the backend with the given canonical name.
func Get(name string) (Backend, error) {
	mu.RLock()
	defer mu.RUnlock()
	b, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("unknown backend %q (known: %v)", name, namesLocked())
	}
	return b, nil
}

// Names lists registered backends, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	return namesLocked()
}

func namesLocked() []string {
	out := make([]string, 0, len(registry))
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
