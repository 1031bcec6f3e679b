package network

import (
	"context"
	"fmt"
)

// Rename moves vm's place on network name to the VM newName: the same
// address, MAC, TAP and ports, now answering DNS as newName. A warm pool's
// member is renamed when it is handed out; its TAP keeps the name it was
// made with (a link renamed under a running QEMU would gain nothing: links
// are found through the record).
func (m *Manager) Rename(ctx context.Context, name, vm, newName string) (*Lease, error) {
	if name == ModeUser || name == ModeNone || name == "" {
		return nil, fmt.Errorf("network %q: nothing to rename (no record)", name)
	}
	unlock, err := m.Store.Lock(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	n, err := m.Store.Get(name)
	if err != nil {
		return nil, err
	}
	a := n.Attached[vm]
	if a == nil {
		return nil, fmt.Errorf("network %s: VM %s is not attached", name, vm)
	}
	if _, taken := n.Attached[newName]; taken {
		return nil, fmt.Errorf("network %s: VM %s is already attached", name, newName)
	}
	delete(n.Attached, vm)
	a.VM = newName
	n.Attached[newName] = a
	if err := m.Store.Put(n); err != nil {
		return nil, err
	}
	return &Lease{Network: n, Attach: a}, nil
}
