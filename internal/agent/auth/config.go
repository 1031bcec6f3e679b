package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"
)

// ALPN names the agent protocol inside TLS. Both sides require it, so a
// peer speaking anything else (or nothing) is refused during the handshake;
// a future incompatible protocol gets a new name and both are offered.
const ALPN = "mvm-agent/1"

// The certificates' validity window is deliberately wide: a guest's clock is
// often wrong before time sync, and nothing checks it anyway — trust comes
// only from the pinned key.
var (
	certNotBefore = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	certNotAfter  = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// Peer roles, used in certificates and error messages.
const (
	roleHost  = "host"
	roleGuest = "guest"
)

// ClientConfig is the host side: it presents hostKey and accepts only a
// server whose key is guestPub (the key pinned for this VM).
func ClientConfig(hostKey ed25519.PrivateKey, guestPub ed25519.PublicKey) (*tls.Config, error) {
	pins := []ed25519.PublicKey{guestPub}
	if err := checkPublicKeys(pins); err != nil {
		return nil, fmt.Errorf("agent client config: %w", err)
	}
	cert, err := selfSigned(hostKey, roleHost)
	if err != nil {
		return nil, fmt.Errorf("agent client config: %w", err)
	}
	cfg := baseConfig(cert, roleGuest, pins)
	// Chain and name checks are meaningless for self-signed envelopes;
	// VerifyConnection makes the real decision and runs on every handshake.
	cfg.InsecureSkipVerify = true
	return cfg, nil
}

// ServerConfig is the guest side: it presents guestKey and accepts only a
// client that proves possession of one of hostPubs. More than one host key
// is accepted only to let a host rotate its key without a window; normally
// there is exactly one.
func ServerConfig(guestKey ed25519.PrivateKey, hostPubs ...ed25519.PublicKey) (*tls.Config, error) {
	if err := checkPublicKeys(hostPubs); err != nil {
		return nil, fmt.Errorf("agent server config: %w", err)
	}
	cert, err := selfSigned(guestKey, roleGuest)
	if err != nil {
		return nil, fmt.Errorf("agent server config: %w", err)
	}
	pins := append([]ed25519.PublicKey(nil), hostPubs...)
	cfg := baseConfig(cert, roleHost, pins)
	// "Any" skips chain validation, not the certificate: TLS still checks
	// the client's CertificateVerify against the presented key.
	cfg.ClientAuth = tls.RequireAnyClientCert
	return cfg, nil
}

func baseConfig(cert tls.Certificate, peer string, pins []ed25519.PublicKey) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		NextProtos:   []string{ALPN},
		// No resumption: every connection proves both keys again. mvmctl is
		// a short-lived process (a cache would be empty anyway), resumption
		// still pays for the key exchange, and the server's post-handshake
		// ticket write can stall unbuffered transports such as net.Pipe.
		SessionTicketsDisabled: true,
		// Plain X25519 instead of Go's default hybrid post-quantum groups:
		// the hybrid costs ~40% more per handshake (see BenchmarkHandshake)
		// and buys nothing here — the stream never leaves this machine, and
		// whoever can record it is root on the host, who can read the VM's
		// memory anyway (out of scope, docs/agent-auth.md).
		CurvePreferences: []tls.CurveID{tls.X25519},
		VerifyConnection: verifyPeer(peer, pins),
	}
}

// verifyPeer is the whole trust decision. TLS calls it after reading the
// peer's Certificate and before checking its CertificateVerify against the
// same key, so a handshake completes only if the key is pinned AND the peer
// holds its private half.
func verifyPeer(peer string, pins []ed25519.PublicKey) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if cs.Version != tls.VersionTLS13 {
			return fmt.Errorf("%s negotiated TLS version %#x, want 1.3", peer, cs.Version)
		}
		if cs.NegotiatedProtocol != ALPN {
			return &ProtocolError{Peer: peer, Got: cs.NegotiatedProtocol}
		}
		if len(cs.PeerCertificates) != 1 {
			return fmt.Errorf("%s presented %d certificates, want exactly 1", peer, len(cs.PeerCertificates))
		}
		got, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
		if !ok {
			return &KeyMismatchError{Peer: peer, Got: fmt.Sprintf("a %T key", cs.PeerCertificates[0].PublicKey), Pinned: fingerprints(pins)}
		}
		match := false
		for _, p := range pins {
			// No early exit: the time taken does not say which pin matched.
			match = samePublicKey(got, p) || match
		}
		if !match {
			return &KeyMismatchError{Peer: peer, Got: Fingerprint(got), Pinned: fingerprints(pins)}
		}
		return nil
	}
}

func fingerprints(pins []ed25519.PublicKey) []string {
	out := make([]string, len(pins))
	for i, p := range pins {
		out[i] = Fingerprint(p)
	}
	return out
}

// selfSigned wraps key in a certificate. It is made once per config, not
// per connection; Ed25519 signing is deterministic, so it is also stable.
func selfSigned(key ed25519.PrivateKey, role string) (tls.Certificate, error) {
	if err := checkPrivateKey(key); err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mvm " + role},
		NotBefore:             certNotBefore,
		NotAfter:              certNotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-sign %s certificate: %w", role, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse %s certificate: %w", role, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
