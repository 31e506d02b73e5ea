package store

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
)

// maxEndpoints bounds Config.Endpoints: an etcd cluster has a handful of
// members.
const maxEndpoints = 64

// checkExternal validates the external etcd settings: every endpoint is a
// URL the etcd client reads the same way we do; plain text, or TLS without
// a client certificate, only with Insecure; TLS files only with TLS
// endpoints.
func (c *Config) checkExternal() error {
	tlsFiles := c.CAFile != "" || c.CertFile != "" || c.KeyFile != ""
	if len(c.Endpoints) == 0 {
		if tlsFiles || c.Insecure {
			return errors.New("store: CAFile, CertFile, KeyFile and Insecure are for an external etcd (set Endpoints); the embedded one has no network listener")
		}
		return nil
	}
	if len(c.Endpoints) > maxEndpoints {
		return fmt.Errorf("store: %d etcd endpoints, at most %d", len(c.Endpoints), maxEndpoints)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("store: CertFile and KeyFile go together: set both (a client certificate) or neither")
	}
	var plain, secure []string
	for _, ep := range c.Endpoints {
		isTLS, err := checkEndpoint(ep)
		if err != nil {
			return err
		}
		if isTLS {
			secure = append(secure, ep)
		} else {
			plain = append(plain, ep)
		}
	}
	switch {
	case len(plain) > 0 && len(secure) > 0:
		// The etcd client uses the first endpoint's kind for all of them.
		return fmt.Errorf("store: etcd endpoints mix TLS (%s) and plain text (%s)", secure[0], plain[0])
	case len(plain) > 0 && tlsFiles:
		return fmt.Errorf("store: etcd endpoint %s is plain text but CAFile, CertFile or KeyFile is set; use https://", plain[0])
	case len(plain) > 0 && !c.Insecure:
		return fmt.Errorf("store: etcd endpoint %s has no TLS: anyone who reaches it reads and rewrites all state. Use https:// with a client certificate (--etcd-cacert, --etcd-cert, --etcd-key), or accept plain text with Insecure (--etcd-insecure)", plain[0])
	case len(secure) > 0 && c.CertFile == "" && !c.Insecure:
		// We have no other credential for etcd: one that lets us in
		// without a certificate lets anyone in who reaches it.
		return errors.New("store: no client certificate for etcd (CertFile and KeyFile: --etcd-cert, --etcd-key): an etcd that admits this control plane without one admits anyone who reaches it. Set one, or accept that with Insecure (--etcd-insecure)")
	}
	return nil
}

// checkEndpoint reports whether ep is a TLS endpoint, or why it is not an
// endpoint at all.
func checkEndpoint(ep string) (isTLS bool, err error) {
	u, err := url.Parse(ep)
	if err != nil {
		return false, fmt.Errorf("store: etcd endpoint %q: %w", ep, err)
	}
	if u.User != nil {
		// The URL would be logged with its password.
		return false, fmt.Errorf("store: etcd endpoint %s: no user or password in the URL", u.Redacted())
	}
	switch u.Scheme {
	case "https", "http":
		if u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return false, fmt.Errorf("store: etcd endpoint %q: want %s://HOST:PORT", ep, u.Scheme)
		}
	case "unixs", "unix":
		if u.Host+u.Path == "" || u.RawQuery != "" || u.Fragment != "" {
			return false, fmt.Errorf("store: etcd endpoint %q: want %s:///PATH", ep, u.Scheme)
		}
	default:
		return false, fmt.Errorf("store: etcd endpoint %q: want https://HOST:PORT", ep)
	}
	return u.Scheme == "https" || u.Scheme == "unixs", nil
}

// tlsConfig returns the client TLS configuration for TLS endpoints, or nil
// for the embedded etcd and plain-text endpoints.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if len(c.Endpoints) == 0 {
		return nil, nil
	}
	if isTLS, _ := checkEndpoint(c.Endpoints[0]); !isTLS {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pemCerts, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("store: etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemCerts) {
			return nil, fmt.Errorf("store: etcd CA: no PEM certificate in %s", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("store: etcd client certificate %s, key %s: %w", c.CertFile, c.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
