package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"

	"github.com/outposthq/outpost/gateway/sshca"
	"github.com/outposthq/outpost/internal/signature"
)

// Defaults applied by Config.CheckAndSetDefaults.
const (
	DefaultConcurrency = 10
	DefaultMinBackoff  = 200 * time.Millisecond
	DefaultMaxBackoff  = 10 * time.Second
	DefaultVersion     = "dev"
)

// Config configures a Gateway.
type Config struct {
	// ControlPlane is the gRPC address of the control plane (required),
	// or the comma-separated addresses of its replicas: the gateway then
	// finds the leader among them, also after a failover.
	ControlPlane string
	// Name identifies the gateway to the control plane; empty means the
	// name in the credential file, else "<hostname>-<datacenter>" (or the
	// host name when the datacenter comes from the join token).
	Name string
	// Datacenter is the one datacenter whose nodes this gateway deploys.
	// With a CredentialFile the certificate decides it (the join token's
	// datacenter) and a non-empty value must agree; without one it is
	// required.
	Datacenter string
	// CredentialFile holds the gateway's credential: its client
	// certificate, private key and the control plane's CA (mode 0600).
	// When it holds no usable credential the gateway joins with JoinToken
	// and writes one; renewed certificates are written back. Empty means
	// the gateway brings no TLS of its own, and DialOptions must carry
	// transport credentials (tests).
	CredentialFile string
	// JoinToken is a single-use token from `outpost token create`, used
	// only when CredentialFile holds no usable credential. It is a secret:
	// it is never logged.
	JoinToken string
	// Concurrency is how many nodes are deployed at once; zero means
	// DefaultConcurrency. It is announced to the control plane as capacity.
	Concurrency int
	// CacheDir holds the artifact cache (required); created if missing.
	CacheDir string
	// CacheMaxBytes bounds the artifact files kept in CacheDir; the least
	// recently used artifact no deployment is using goes first. Zero
	// means artifactcache.DefaultMaxBytes; negative is an error.
	CacheMaxBytes int64
	// SSH holds the credentials and known hosts used for every node.
	SSH SSHConfig
	// MetricsListen is the address of the Prometheus /metrics endpoint;
	// empty means none.
	MetricsListen string
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// TracerProvider makes the deployer's spans; nil means the otel global.
	TracerProvider trace.TracerProvider
	// DialOptions are added to the gRPC dial after the defaults (a
	// keepalive ping after 10 idle seconds; TLS with the credential when
	// there is a CredentialFile), so they override them.
	DialOptions []grpc.DialOption
	// MinBackoff and MaxBackoff bound the jittered exponential pause
	// between reconnection attempts; zero means DefaultMinBackoff and
	// DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Version is reported in the hello; empty means DefaultVersion.
	Version string
	// Now is the clock for heartbeats and durations; nil means time.Now.
	Now func() time.Time
	// TrustedKeys are the public keys whose artifact signatures this
	// gateway accepts (internal/signature); nil trusts none. A signature
	// an assignment carries is verified against them before the node is
	// dialled, whatever the control plane says it verified.
	TrustedKeys *signature.Trust
	// RequireSignature refuses every deployment whose artifact is not
	// signed by one of TrustedKeys, which must then not be empty.
	RequireSignature bool
}

// SSHConfig says how the gateway logs in to nodes and trusts their host
// keys. Credentials are offered in this order: certificates, keys,
// password.
type SSHConfig struct {
	// User is the login for nodes whose Node.user is empty; empty means
	// such nodes fail at connect.
	User string
	// KeyFiles are unencrypted private key files, loaded once by New. A
	// "<file>-cert.pub" next to one is offered as a user certificate too.
	KeyFiles []string
	// Signers are keys already loaded.
	Signers []ssh.Signer
	// Agent offers the keys of the ssh-agent at $SSH_AUTH_SOCK (the way to
	// use encrypted keys).
	Agent bool
	// PasswordFile holds the password for legacy nodes without keys; one
	// trailing newline is ignored. Empty means no password. The password
	// is never logged.
	PasswordFile string
	// KnownHostsFiles are OpenSSH known_hosts files checked for nodes that
	// carry no pinned host keys.
	KnownHostsFiles []string
	// CAKeyFile is the datacenter's SSH user CA private key (unencrypted,
	// mode 0600 or stricter; the same file for every gateway of the
	// datacenter). When set, each node deployment logs in with a fresh
	// key pair and a certificate signed by it (see gateway/sshca), offered
	// before any other credential; nodes trust it with sshd's
	// TrustedUserCAKeys. Empty means no certificates.
	CAKeyFile string
	// CertValidity is how long each deployment's certificate is valid
	// after it is issued, and so how long the deployment may run: it is
	// cancelled (cleaned up or rolled back) early enough to finish within
	// the certificate. Zero means sshca.DefaultValidity; otherwise
	// sshca.MinValidity to sshca.MaxValidity.
	CertValidity time.Duration
	// CertSourceAddresses are the only addresses the certificates may be
	// used from (their source-address); nil means the gateway host's own
	// non-loopback addresses, plus loopback for nodes on loopback. Set it
	// when a NAT between the gateway and its nodes changes the address
	// the nodes see.
	CertSourceAddresses []netip.Prefix
	// LocalAddr is the local IP address to connect to nodes from (ssh -b);
	// empty lets the system choose.
	LocalAddr string
	// MaxHandshakes bounds the SSH connection set-ups (TCP connect, key
	// exchange, authentication) running at once across all nodes, so a
	// large batch does not hit every server's MaxStartups and the
	// gateway's CPU at the same instant; attempts beyond it wait their
	// turn. Zero means sshexec's default (32).
	MaxHandshakes int
}

// CheckAndSetDefaults validates c and fills in defaults. It reads nothing
// but the host name; New settles the name and datacenter from the
// credential file.
func (c *Config) CheckAndSetDefaults() error {
	if c.ControlPlane == "" {
		return errors.New("gateway: ControlPlane is required")
	}
	if c.JoinToken != "" && c.CredentialFile == "" {
		return errors.New("gateway: JoinToken needs a CredentialFile to keep the credential in")
	}
	if c.Datacenter == "" && c.CredentialFile == "" {
		return errors.New("gateway: Datacenter is required")
	}
	if c.Name == "" && c.CredentialFile == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("gateway: Name is empty and the host name is unknown: %w", err)
		}
		c.Name = host + "-" + c.Datacenter
	}
	if c.CacheDir == "" {
		return errors.New("gateway: CacheDir is required")
	}
	if c.CacheMaxBytes < 0 {
		return fmt.Errorf("gateway: CacheMaxBytes %d is negative", c.CacheMaxBytes)
	}
	switch {
	case c.Concurrency < 0:
		return fmt.Errorf("gateway: Concurrency %d is negative", c.Concurrency)
	case c.SSH.MaxHandshakes < 0:
		return fmt.Errorf("gateway: SSH.MaxHandshakes %d is negative", c.SSH.MaxHandshakes)
	case c.Concurrency == 0:
		c.Concurrency = DefaultConcurrency
	}
	if c.MinBackoff < 0 || c.MaxBackoff < 0 {
		return errors.New("gateway: negative MinBackoff or MaxBackoff")
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.MaxBackoff < c.MinBackoff {
		return fmt.Errorf("gateway: MaxBackoff %v is below MinBackoff %v", c.MaxBackoff, c.MinBackoff)
	}
	s := c.SSH
	if len(s.KeyFiles) == 0 && len(s.Signers) == 0 && !s.Agent && s.PasswordFile == "" && s.CAKeyFile == "" {
		return errors.New("gateway: SSH: no credentials (CAKeyFile, KeyFiles, Signers, Agent or PasswordFile)")
	}
	if err := c.SSH.checkCert(); err != nil {
		return err
	}
	for i, k := range s.Signers {
		if k == nil {
			return fmt.Errorf("gateway: SSH.Signers[%d] is nil", i)
		}
	}
	if c.RequireSignature && c.TrustedKeys.Empty() {
		return errors.New("gateway: RequireSignature needs TrustedKeys")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// checkCert validates the certificate settings and sets their defaults.
func (s *SSHConfig) checkCert() error {
	if s.CAKeyFile == "" {
		if s.CertValidity != 0 || s.CertSourceAddresses != nil {
			return errors.New("gateway: SSH.CertValidity and SSH.CertSourceAddresses need SSH.CAKeyFile")
		}
	} else if s.CertValidity == 0 {
		s.CertValidity = sshca.DefaultValidity
	}
	if s.CAKeyFile != "" && (s.CertValidity < sshca.MinValidity || s.CertValidity > sshca.MaxValidity) {
		return fmt.Errorf("gateway: SSH.CertValidity %v is outside %v..%v", s.CertValidity, sshca.MinValidity, sshca.MaxValidity)
	}
	if s.CertSourceAddresses != nil && len(s.CertSourceAddresses) == 0 {
		return errors.New("gateway: SSH.CertSourceAddresses is empty; nil means the host's own addresses")
	}
	if s.LocalAddr != "" {
		if ip, err := netip.ParseAddr(s.LocalAddr); err != nil || ip.Zone() != "" {
			return fmt.Errorf("gateway: SSH.LocalAddr %q is not an IP address", s.LocalAddr)
		}
	}
	return nil
}
