package sshca

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/internal/keyfile"
)

// Bounds of a certificate's lifetime.
const (
	// DefaultValidity is how long a certificate stays valid after it is
	// issued when the gateway is not told otherwise.
	DefaultValidity = time.Hour
	// MinValidity leaves a deployment time to clean up and roll back
	// within its certificate's validity.
	MinValidity = 5 * time.Minute
	// MaxValidity bounds every certificate: a credential that leaks is
	// useless after a day at most.
	MaxValidity = 24 * time.Hour
	// Backdate is how long before its issue a certificate becomes valid,
	// for nodes whose clock runs behind the gateway's.
	Backdate = time.Minute
)

// maxKeyFile bounds how much of a CA key file is read.
const maxKeyFile = 64 << 10

// maxSourceAddresses bounds the source-address list, which sshd parses
// on every login.
const maxSourceAddresses = 64

// LoadCA reads the CA's private key (OpenSSH or PEM form, unencrypted).
// Like ssh, it refuses a file that its group or others may read or write
// (internal/keyfile).
// Errors name the file, never its content.
func LoadCA(path string) (ssh.Signer, error) {
	data, err := keyfile.ReadPrivate(path, maxKeyFile)
	if errors.Is(err, keyfile.ErrTooLarge) {
		return nil, fmt.Errorf("sshca: CA key %s is larger than %d bytes; not a private key", path, maxKeyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("sshca: CA key: %w", err)
	}
	s, err := ssh.ParsePrivateKey(data)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("sshca: CA key %s is encrypted; the gateway needs it unencrypted (keep the file mode 0600 on a host only it uses)", path)
		}
		// x/crypto's parse errors do not quote the key.
		return nil, fmt.Errorf("sshca: CA key %s: %w", path, err)
	}
	return s, nil
}

// ParseSourceAddresses parses a comma-separated list of addresses and
// CIDR blocks ("10.1.2.3,10.8.0.0/16,2001:db8::/32"). A bare address
// means just that address. A block with host bits set is refused, as sshd
// would refuse the certificate.
func ParseSourceAddresses(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			return nil, fmt.Errorf("sshca: source address list %q has an empty entry", s)
		}
		var p netip.Prefix
		if strings.Contains(f, "/") {
			var err error
			if p, err = netip.ParsePrefix(f); err != nil {
				return nil, fmt.Errorf("sshca: source address %q: not an address or CIDR block", f)
			}
			if p.Addr().Zone() != "" {
				return nil, fmt.Errorf("sshca: source address %q: zones are not allowed", f)
			}
			if p.Masked() != p {
				return nil, fmt.Errorf("sshca: source address %q has host bits set; did you mean %s?", f, p.Masked())
			}
		} else {
			a, err := netip.ParseAddr(f)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("sshca: source address %q: not an address or CIDR block", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("sshca: source address %q: write IPv4 as IPv4", f)
		}
		out = append(out, p)
	}
	if len(out) > maxSourceAddresses {
		return nil, fmt.Errorf("sshca: %d source addresses; at most %d", len(out), maxSourceAddresses)
	}
	return out, nil
}

// Config configures an Authority.
type Config struct {
	// CA signs the certificates. Required.
	CA ssh.Signer
	// SourceAddresses are the only addresses from which a certificate may
	// be used (its source-address option). Nil means the host's own:
	// every non-loopback interface address, read at each Issue, plus the
	// loopback blocks when the node itself is on loopback.
	SourceAddresses []netip.Prefix
	// InterfaceAddrs lists the host's addresses; nil means
	// net.InterfaceAddrs.
	InterfaceAddrs func() ([]net.Addr, error)
	// Resolver resolves a node's host name to decide whether it is on
	// loopback; nil means net.DefaultResolver.
	Resolver interface {
		LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	}
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand is the entropy for keys, serials and nonces; nil means
	// crypto/rand.
	Rand io.Reader
}

// Authority issues certificates. It is safe for concurrent use.
type Authority struct {
	cfg Config
}

// New validates cfg and returns an Authority.
func New(cfg Config) (*Authority, error) {
	if cfg.CA == nil {
		return nil, errors.New("sshca: Config.CA is required")
	}
	if len(cfg.SourceAddresses) > maxSourceAddresses {
		return nil, fmt.Errorf("sshca: %d source addresses; at most %d", len(cfg.SourceAddresses), maxSourceAddresses)
	}
	for _, p := range cfg.SourceAddresses {
		if !p.IsValid() || p.Masked() != p {
			return nil, fmt.Errorf("sshca: source address %s is not a canonical CIDR block", p)
		}
	}
	if cfg.InterfaceAddrs == nil {
		cfg.InterfaceAddrs = net.InterfaceAddrs
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	return &Authority{cfg: cfg}, nil
}

// PublicKey is the CA's public key, for nodes' TrustedUserCAKeys.
func (a *Authority) PublicKey() ssh.PublicKey { return a.cfg.CA.PublicKey() }

// Request says whom a certificate is for.
type Request struct {
	// User is the login on the node, the certificate's only principal.
	User string
	// NodeAddress is the node's host or host:port. By default a node on
	// loopback also allows loopback source addresses.
	NodeAddress string
	// RolloutID, NodeID, AssignmentID and Gateway name the deployment in
	// the key id.
	RolloutID, NodeID, AssignmentID, Gateway string
	// ValidBefore is when the certificate expires: after now and at most
	// MaxValidity from now.
	ValidBefore time.Time
}

// Credential is one deployment's key pair and certificate. The private key
// lives only in Signer.
type Credential struct {
	// Signer authenticates with the certificate.
	Signer ssh.Signer
	// Cert is the certificate, for logs: key id, serial, validity.
	Cert *ssh.Certificate

	used atomic.Bool
}

// Used reports whether the certificate's key signed an authentication
// request, which an SSH client does only after the server accepted the
// certificate.
func (c *Credential) Used() bool { return c.used.Load() }

// Issue makes a fresh ed25519 key pair and a certificate for it.
func (a *Authority) Issue(ctx context.Context, r Request) (*Credential, error) {
	if err := checkPrincipal(r.User); err != nil {
		return nil, err
	}
	now := a.cfg.Now()
	switch {
	case !r.ValidBefore.After(now):
		return nil, fmt.Errorf("sshca: ValidBefore %v is not after now (%v)", r.ValidBefore, now)
	case r.ValidBefore.Sub(now) > MaxValidity:
		return nil, fmt.Errorf("sshca: ValidBefore %v is more than %v from now", r.ValidBefore, MaxValidity)
	}
	sources, err := a.sourceAddresses(ctx, r.NodeAddress)
	if err != nil {
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(a.cfg.Rand)
	if err != nil {
		return nil, fmt.Errorf("sshca: generate key: %w", err)
	}
	key, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("sshca: key: %w", err)
	}
	var serial [8]byte
	if _, err := io.ReadFull(a.cfg.Rand, serial[:]); err != nil {
		return nil, fmt.Errorf("sshca: serial: %w", err)
	}
	cert := &ssh.Certificate{
		Key:             key.PublicKey(),
		Serial:          binary.BigEndian.Uint64(serial[:]),
		CertType:        ssh.UserCert,
		KeyId:           KeyID(r.RolloutID, r.NodeID, r.AssignmentID, r.Gateway),
		ValidPrincipals: []string{r.User},
		ValidAfter:      uint64(now.Add(-Backdate).Unix()),
		ValidBefore:     uint64(r.ValidBefore.Unix()),
		Permissions: ssh.Permissions{
			CriticalOptions: map[string]string{"source-address": joinPrefixes(sources)},
			// No extensions: sshd then allows no pty, no forwarding of
			// ports, agent or X11, and runs no ~/.ssh/rc. The deployer
			// needs none of them: it runs commands without a pty, and SFTP.
			Extensions: map[string]string{},
		},
	}
	if err := cert.SignCert(a.cfg.Rand, a.cfg.CA); err != nil {
		return nil, fmt.Errorf("sshca: sign certificate: %w", err)
	}
	cs, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		return nil, fmt.Errorf("sshca: certificate signer: %w", err)
	}
	ms, ok := cs.(ssh.MultiAlgorithmSigner)
	if !ok {
		return nil, errors.New("sshca: certificate signer offers no algorithm choice")
	}
	c := &Credential{Cert: cert}
	c.Signer = &usedSigner{MultiAlgorithmSigner: ms, used: &c.used}
	return c, nil
}

// checkPrincipal refuses a login name sshd would never match, and one that
// would split the principals list.
func checkPrincipal(u string) error {
	if u == "" || len(u) > 255 || strings.ContainsAny(u, ",\x00") || strings.ContainsFunc(u, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("sshca: %q is not a usable login name for a certificate principal", u)
	}
	return nil
}

// sourceAddresses is the source-address list for a node at nodeAddr.
func (a *Authority) sourceAddresses(ctx context.Context, nodeAddr string) ([]netip.Prefix, error) {
	if a.cfg.SourceAddresses != nil {
		return a.cfg.SourceAddresses, nil
	}
	addrs, err := a.cfg.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("sshca: list this host's addresses for source-address: %w", err)
	}
	var out []netip.Prefix
	for _, ad := range addrs {
		n, ok := ad.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLoopback() || ip.IsUnspecified() || ip.IsMulticast() {
			continue
		}
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	if a.onLoopback(ctx, nodeAddr) {
		// Traffic to a loopback address comes from a loopback address
		// (Linux picks 127.0.0.1, but a client may bind any of 127/8).
		out = append(out, netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
	}
	slices.SortFunc(out, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	out = slices.Compact(out)
	if len(out) == 0 {
		return nil, errors.New("sshca: this host has no non-loopback address to bind certificates to; give the source addresses explicitly (--ssh-cert-source-address)")
	}
	if len(out) > maxSourceAddresses {
		return nil, fmt.Errorf("sshca: this host has %d addresses, more than %d for source-address; give them explicitly (--ssh-cert-source-address)", len(out), maxSourceAddresses)
	}
	return out, nil
}

// onLoopback reports whether the node at addr (host or host:port) is this
// host's loopback. A name that does not resolve is not.
func (a *Authority) onLoopback(ctx context.Context, addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap().IsLoopback()
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	if host == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := a.cfg.Resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(ips, func(ip netip.Addr) bool { return ip.Unmap().IsLoopback() })
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// maxKeyIDPart bounds each value in a key id.
const maxKeyIDPart = 100

// KeyID is the key id of a deployment's certificate, as sshd logs it:
// "outpost rollout=R node=N assignment=A gateway=G". Each value keeps
// letters, digits and ".-_:@+/" and has anything else replaced by '_',
// so that it stays one word of one log line; an empty value is "-".
func KeyID(rollout, node, assignment, gateway string) string {
	return fmt.Sprintf("outpost rollout=%s node=%s assignment=%s gateway=%s",
		keyIDPart(rollout), keyIDPart(node), keyIDPart(assignment), keyIDPart(gateway))
}

func keyIDPart(s string) string {
	if s == "" {
		return "-"
	}
	var b strings.Builder
	for i, r := range s {
		if i >= maxKeyIDPart {
			b.WriteString("...")
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune(".-_:@+/", r):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// usedSigner records that the key signed, which a client does only for a
// key the server accepted. It keeps the certificate signer's algorithm
// choices visible to x/crypto.
type usedSigner struct {
	ssh.MultiAlgorithmSigner
	used *atomic.Bool
}

func (s *usedSigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	s.used.Store(true)
	return s.MultiAlgorithmSigner.Sign(rand, data)
}

func (s *usedSigner) SignWithAlgorithm(rand io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	s.used.Store(true)
	return s.MultiAlgorithmSigner.SignWithAlgorithm(rand, data, algorithm)
}
