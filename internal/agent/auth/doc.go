// Package auth authenticates both ends of every agent connection: TLS 1.3
// from the standard library, each side presenting a self-signed Ed25519
// certificate, each side accepting exactly one pinned peer key (or a short
// list during rotation). Certificates are only envelopes for the keys: no
// chain, name or validity period takes part in the trust decision.
//
// Host side: LoadOrCreateHostKey gives the user's host key; NewGuestKey makes
// a per-VM guest key before the VM first boots (its private half goes on the
// config drive, its public half is pinned in the VM record); ClientConfig +
// Client (or ClientWrap) wrap each dialled stream.
//
// Guest side: ParsePrivateKey / ParsePublicKey read the config drive;
// ServerConfig + Server (or ServerWrap) wrap each accepted stream.
//
// The threat model lives in docs/agent-auth.md.
package auth
