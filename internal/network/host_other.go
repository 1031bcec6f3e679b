//go:build !linux

package network

import (
	"errors"
	"net/netip"
	"time"
)

// Bridged networking is Linux-only; elsewhere only user mode exists.
var errNoBridge = errors.New("bridged networking needs Linux")

func hostOccupied(map[string]bool) ([]Occupied, error) { return nil, nil }
func uplinkMTU() int                                   { return 1500 }
func ensureBridge(*Network) error                      { return errNoBridge }
func ensureTAP(*Network, *Attachment) error            { return errNoBridge }
func deleteLink(string) error                          { return nil }
func linkExists(string) bool                           { return false }
func anyLinkWithPrefix(string) bool                    { return false }
func applyFirewall(string, []*Network) error           { return nil }
func dockerForwardDrops() (bool, error)                { return false, errNoBridge }
func hasCapNetAdmin() bool                             { return false }
func readSysctl(string) string                         { return "" }

func nftablesUsable() error { return errNoBridge }
func dockerUserChain() bool { return false }

func (m *Manager) AllowAddresses(*Network, []netip.Addr, time.Duration) error { return nil }
func (m *Manager) DropsSeen(*Network) []Drop                                  { return nil }
func (m *Manager) DropCounters(*Network) map[string]uint64                    { return nil }

// SetLinkUp needs Linux links.
func SetLinkUp(string, bool) error { return nil }
