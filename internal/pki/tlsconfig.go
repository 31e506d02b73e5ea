package pki

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ServerTLSConfig returns the control plane's TLS config: TLS 1.3, cert as
// the server certificate, and client certificates verified against ca
// when given. A client without a certificate may still connect, because a
// joining gateway has none yet: the authorization interceptor
// (controlplane/auth) decides per call whether an identity is required.
func ServerTLSConfig(ca *CA, cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
		Time:         ca.Now,
	}
}

// ClientTLSConfig returns a client's TLS config: TLS 1.3, the credential's
// certificate, and the server verified against the credential's CAs under
// serverName ("" means ServerName, which every control plane certificate
// carries).
func ClientTLSConfig(cred *Credential, serverName string) *tls.Config {
	if serverName == "" {
		serverName = ServerName
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cred.Certificate},
		RootCAs:      cred.CAs,
		ServerName:   serverName,
	}
}

// ClientTLSConfigForCA is ClientTLSConfig without a client certificate, for
// clients that trust caPEM but have no credential yet.
func ClientTLSConfigForCA(caPEM []byte, serverName string) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("pki: no CA certificate in PEM")
	}
	if serverName == "" {
		serverName = ServerName
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: serverName}, nil
}

// JoinTLSConfig returns the TLS config of a gateway joining with a token:
// no client certificate, and the server accepted only if its chain
// includes the CA with the given SHA-256 fingerprint (from the join token)
// and that CA signed the server certificate for serverName ("" means
// ServerName). This is how a gateway trusts the control plane before it
// has the CA certificate.
func JoinTLSConfig(caFingerprint [32]byte, serverName string) *tls.Config {
	if serverName == "" {
		serverName = ServerName
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verification is not skipped: VerifyConnection below does it,
		// against the pinned CA instead of the system roots.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs.PeerCertificates, caFingerprint, serverName)
		},
	}
}

func verifyPinned(chain []*x509.Certificate, fp [32]byte, serverName string) error {
	if len(chain) == 0 {
		return errors.New("pki: server sent no certificate")
	}
	var ca *x509.Certificate
	for _, c := range chain[1:] {
		sum := sha256.Sum256(c.Raw)
		if subtle.ConstantTimeCompare(sum[:], fp[:]) == 1 {
			ca = c
			break
		}
	}
	if ca == nil {
		return errors.New("pki: the server's CA does not match the join token's CA fingerprint (wrong control plane, or the token is from another installation)")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots:     roots,
		DNSName:   serverName,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("pki: verify server certificate: %w", err)
	}
	return nil
}
