package sshexec

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Defaults applied by Config.CheckAndSetDefaults.
const (
	DefaultPort               = "22"
	DefaultDialTimeout        = 10 * time.Second
	DefaultHandshakeTimeout   = 10 * time.Second
	DefaultKeepaliveInterval  = 5 * time.Second
	DefaultKeepaliveMaxMissed = 3
	DefaultMaxOutputBytes     = 64 << 10
	DefaultUploadSessions     = 4
	DefaultDialRetries        = 3
	DefaultDialBackoff        = 200 * time.Millisecond
	DefaultDialMaxBackoff     = 2 * time.Second
)

// Config says how to reach and trust one node.
type Config struct {
	// Address is host:port. ":22" is added when the port is missing.
	Address string
	// User is the login name on the node.
	User string
	// Auth holds the credentials to offer. At least one kind is required.
	Auth Auth
	// HostKeys says which host keys to accept. At least one pinned key or
	// known_hosts file is required: there is no trust on first use.
	HostKeys HostKeys

	// LocalAddr is the local IP address to connect from, as ssh -b does,
	// for a host with several addresses whose nodes accept only one (a
	// certificate's source-address); empty lets the system choose.
	LocalAddr string

	// DialTimeout bounds the TCP connect; zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the SSH handshake and authentication; zero
	// means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// DialRetries is how many more attempts Dial makes when one fails the
	// way a busy or restarting server fails it: the TCP connect refused or
	// reset, or the connection closed or reset before the host key was
	// seen (sshd drops connections beyond MaxStartups before its banner).
	// A refused host key, failed authentication and timeouts are never
	// retried. Zero means DefaultDialRetries; negative means none.
	DialRetries int
	// DialBackoff is the wait before the first retry; each further retry
	// waits twice as long, up to DialMaxBackoff. Every wait is shortened
	// by a random part of up to half, so that nodes refused together do
	// not retry together. Zero means DefaultDialBackoff, and
	// DefaultDialMaxBackoff (or DialBackoff when that is longer).
	DialBackoff, DialMaxBackoff time.Duration
	// DialLimiter, when set, bounds how many connection set-ups run at
	// once across every Config sharing it (a gateway shares one among all
	// its nodes). Nil means no bound.
	DialLimiter *DialLimiter
	// KeepaliveInterval is the period of keepalive@openssh.com probes, and
	// how long each probe may wait for its reply; zero means
	// DefaultKeepaliveInterval, negative disables keepalives.
	KeepaliveInterval time.Duration
	// KeepaliveMaxMissed is how many intervals may pass without a reply
	// before the connection is closed (and every call in flight fails); zero
	// means DefaultKeepaliveMaxMissed.
	KeepaliveMaxMissed int
	// MaxOutputBytes is how much of each of stdout and stderr Run keeps;
	// the first bytes are kept and Result.Truncated is set. Zero means
	// DefaultMaxOutputBytes.
	MaxOutputBytes int
	// UploadSessions is how many SFTP sessions (channels) one Upload of a
	// large file may use at once; each brings its own 2 MiB OpenSSH window,
	// which is what bounds one session over a long round trip. Zero means
	// DefaultUploadSessions; 1 keeps every upload on one session.
	UploadSessions int

	// Logger receives connection events, never secrets; nil discards.
	Logger *slog.Logger
}

// Auth holds the credentials offered to the node, in this order: user
// certificates, plain keys (loaded, from files, from the agent), password.
// The zero value offers nothing.
type Auth struct {
	// Signers are keys already loaded.
	Signers []ssh.Signer
	// KeyFiles are unencrypted private key files. When "<file>-cert.pub"
	// exists next to one, it is offered as a user certificate too, as
	// OpenSSH does.
	KeyFiles []string
	// CertFiles are user certificate files, each paired with the loaded key
	// (Signers, KeyFiles or agent) whose public key it certifies.
	CertFiles []string
	// Agent offers the keys of the ssh-agent at $SSH_AUTH_SOCK.
	Agent bool
	// Password is for legacy nodes without keys; empty means none. It is
	// sent for "password" and "keyboard-interactive" and never logged.
	Password string
}

// HostKeys says which host keys a node may present. A key is accepted when
// a pinned key equals it or a known_hosts file accepts it for Address.
type HostKeys struct {
	// Pinned are the exact keys to accept.
	Pinned []ssh.PublicKey
	// KnownHostsFiles are OpenSSH known_hosts files, with hashed host names,
	// @cert-authority and @revoked lines.
	KnownHostsFiles []string
}

// CheckAndSetDefaults validates c and fills in defaults. It does not touch
// the network or the file system.
func (c *Config) CheckAndSetDefaults() error {
	if strings.TrimSpace(c.Address) == "" {
		return errors.New("sshexec: Address is required")
	}
	addr, err := withDefaultPort(c.Address)
	if err != nil {
		return fmt.Errorf("sshexec: Address %q: %w", c.Address, err)
	}
	c.Address = addr
	if c.User == "" {
		return errors.New("sshexec: User is required")
	}
	if c.LocalAddr != "" {
		if ip, err := netip.ParseAddr(c.LocalAddr); err != nil || ip.Zone() != "" {
			return fmt.Errorf("sshexec: LocalAddr %q is not an IP address", c.LocalAddr)
		}
	}
	a := c.Auth
	if len(a.Signers) == 0 && len(a.KeyFiles) == 0 && len(a.CertFiles) == 0 && !a.Agent && a.Password == "" {
		return errors.New("sshexec: Auth: no credentials (Signers, KeyFiles, CertFiles, Agent or Password)")
	}
	for i, s := range a.Signers {
		if s == nil {
			return fmt.Errorf("sshexec: Auth.Signers[%d] is nil", i)
		}
	}
	if len(c.HostKeys.Pinned) == 0 && len(c.HostKeys.KnownHostsFiles) == 0 {
		return errors.New("sshexec: HostKeys: no pinned keys or known_hosts files; host keys are always verified")
	}
	for i, k := range c.HostKeys.Pinned {
		if k == nil {
			return fmt.Errorf("sshexec: HostKeys.Pinned[%d] is nil", i)
		}
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"DialTimeout", &c.DialTimeout, DefaultDialTimeout},
		{"HandshakeTimeout", &c.HandshakeTimeout, DefaultHandshakeTimeout},
		{"DialBackoff", &c.DialBackoff, DefaultDialBackoff},
		{"DialMaxBackoff", &c.DialMaxBackoff, max(DefaultDialMaxBackoff, c.DialBackoff)},
	} {
		if *d.v < 0 {
			return fmt.Errorf("sshexec: %s %v is negative", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.DialMaxBackoff < c.DialBackoff {
		return fmt.Errorf("sshexec: DialMaxBackoff %v is less than DialBackoff %v", c.DialMaxBackoff, c.DialBackoff)
	}
	if c.DialRetries == 0 {
		c.DialRetries = DefaultDialRetries
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if c.KeepaliveMaxMissed < 0 {
		return fmt.Errorf("sshexec: KeepaliveMaxMissed %d is negative", c.KeepaliveMaxMissed)
	}
	if c.KeepaliveMaxMissed == 0 {
		c.KeepaliveMaxMissed = DefaultKeepaliveMaxMissed
	}
	if c.MaxOutputBytes < 0 {
		return fmt.Errorf("sshexec: MaxOutputBytes %d is negative", c.MaxOutputBytes)
	}
	if c.MaxOutputBytes == 0 {
		c.MaxOutputBytes = DefaultMaxOutputBytes
	}
	if c.UploadSessions < 0 {
		return fmt.Errorf("sshexec: UploadSessions %d is negative", c.UploadSessions)
	}
	if c.UploadSessions == 0 {
		c.UploadSessions = DefaultUploadSessions
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

// withDefaultPort returns addr as host:port, adding port 22 when addr has
// none. Bare IPv6 addresses ("::1") and bracketed ones ("[::1]") both work.
func withDefaultPort(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if host == "" || port == "" {
			return "", errors.New("empty host or port")
		}
		return addr, nil
	}
	host := strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	if host == "" || strings.ContainsAny(host, "[]") {
		return "", errors.New("not host or host:port")
	}
	if strings.Contains(host, ":") && net.ParseIP(host) == nil {
		return "", errors.New("not host or host:port")
	}
	return net.JoinHostPort(host, DefaultPort), nil
}

// ParseAuthorizedKey parses one public key in authorized_keys format
// ("ssh-ed25519 AAAA... comment", options allowed), as inventories carry
// pinned host keys.
func ParseAuthorizedKey(line string) (ssh.PublicKey, error) {
	key, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(strings.TrimSpace(line)))
	if err != nil {
		return nil, fmt.Errorf("sshexec: parse public key: %w", err)
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("sshexec: parse public key: more than one key")
	}
	return key, nil
}
