package server

import "sync"

// statusList is the latest status of each item of a fixed list (image
// services, health checks), shared between the goroutines that run them and
// the health operation that reports them.
type statusList[T any] struct {
	mu    sync.Mutex
	items []T
}

// reset replaces the list.
func (l *statusList[T]) reset(items []T) {
	l.mu.Lock()
	l.items = items
	l.mu.Unlock()
}

// update applies f to item i; an index past the list is ignored.
func (l *statusList[T]) update(i int, f func(*T)) {
	l.mu.Lock()
	if i < len(l.items) {
		f(&l.items[i])
	}
	l.mu.Unlock()
}

// snapshot returns a copy of the list.
func (l *statusList[T]) snapshot() []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]T(nil), l.items...)
}
