package pki

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/outposthq/outpost/internal/keyfile"
)

// Credential is a client's TLS identity: its certificate and key, and the
// CA certificates it trusts for the server. On disk it is one PEM file (see
// EncodeCredential), which the CLI and the gateway load.
type Credential struct {
	// Identity carried by the certificate.
	Identity Identity
	// Certificate is the client certificate (Leaf set) and its private key.
	Certificate tls.Certificate
	// CAs holds the CA certificates of CAPEM.
	CAs *x509.CertPool
	// CAPEM is the CA certificates in PEM.
	CAPEM []byte
	// Server is the control plane address recorded in the file; empty when
	// none was recorded.
	Server string
}

// Leaf returns the client certificate.
func (c *Credential) Leaf() *x509.Certificate { return c.Certificate.Leaf }

// RenewAt returns when two thirds of the certificate's lifetime have
// passed: the time to renew it.
func (c *Credential) RenewAt() time.Time {
	l := c.Certificate.Leaf
	return l.NotBefore.Add(l.NotAfter.Sub(l.NotBefore) * 2 / 3)
}

// serverLine introduces the control plane address in a credential file's
// preamble.
const serverLine = "# server: "

// EncodeCredential returns a credential file: a comment preamble (who, until
// when, which server), the client certificate, its private key and the CA
// certificates. It checks that the pieces fit together.
func EncodeCredential(caPEM, certPEM []byte, key crypto.Signer, server string) ([]byte, error) {
	if strings.ContainsAny(server, "\r\n") {
		return nil, errors.New("pki: server address contains a line break")
	}
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: client certificate: %w", err)
	}
	keyPEM, err := encodeKeyPEM(key)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	id, err := IdentityFromCert(cert)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	fmt.Fprintf(&b, "# Outpost credential for %s, serial %s, expires %s.\n", id, SerialString(cert), cert.NotAfter.UTC().Format(time.RFC3339))
	b.WriteString("# It holds a private key: keep it mode 0600.\n")
	if server != "" {
		b.WriteString(serverLine + server + "\n")
	}
	b.Write(encodeCertPEM(cert.Raw))
	b.Write(keyPEM)
	b.Write(caPEM)
	out := b.Bytes()
	// Parse what we wrote, so a bad combination is refused here rather than
	// by whoever loads the file.
	if _, err := ParseCredential(out); err != nil {
		return nil, err
	}
	return out, nil
}

// NewCredential returns the credential made of these pieces, checked as
// ParseCredential checks a file.
func NewCredential(caPEM, certPEM []byte, key crypto.Signer, server string) (*Credential, error) {
	data, err := EncodeCredential(caPEM, certPEM, key, server)
	if err != nil {
		return nil, err
	}
	return ParseCredential(data)
}

// Write writes the credential to path as WriteCredential does.
func (c *Credential) Write(path string) error {
	key, ok := c.Certificate.PrivateKey.(crypto.Signer)
	if !ok {
		return fmt.Errorf("pki: credential key type %T cannot sign", c.Certificate.PrivateKey)
	}
	return WriteCredential(path, c.CAPEM, encodeCertPEM(c.Leaf().Raw), key, c.Server)
}

// WriteCredential writes a credential file at path with mode 0600,
// atomically, replacing any file there.
func WriteCredential(path string, caPEM, certPEM []byte, key crypto.Signer, server string) error {
	data, err := EncodeCredential(caPEM, certPEM, key, server)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("pki: write credential: %w", err)
	}
	return nil
}

// maxCredentialFile bounds what is read of a credential file: a key, a
// certificate and the CA bundle take a few KiB.
const maxCredentialFile = 1 << 20

// LoadCredential reads a credential file. Like ssh with its keys, it
// refuses a file that group or others may access (internal/keyfile). An expired credential
// loads (so the caller can say when it expired); the server refuses it.
func LoadCredential(path string) (*Credential, error) {
	data, err := keyfile.ReadPrivate(path, maxCredentialFile)
	if err != nil {
		return nil, fmt.Errorf("pki: credential (it holds a private key): %w", err)
	}
	c, err := ParseCredential(data)
	if err != nil {
		return nil, fmt.Errorf("pki: credential %s: %w", path, err)
	}
	return c, nil
}

// ParseCredential parses a credential file's content: exactly one PKCS #8
// private key, exactly one client certificate for that key, and at least
// one CA certificate that signed it. Error messages never quote the data.
func ParseCredential(data []byte) (*Credential, error) {
	c := &Credential{CAs: x509.NewCertPool()}
	c.Server = preambleServer(data)
	var (
		key   crypto.Signer
		certs []*x509.Certificate
	)
	for rest := data; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "PRIVATE KEY":
			if key != nil {
				return nil, errors.New("more than one private key")
			}
			k, err := parseKeyDER(blk.Bytes)
			if err != nil {
				return nil, err
			}
			key = k
		case "CERTIFICATE":
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse certificate: %w", err)
			}
			certs = append(certs, cert)
		default:
			// Names the block type only; a key in another format must not
			// be echoed.
			return nil, fmt.Errorf("unexpected PEM block %q (want CERTIFICATE or PRIVATE KEY)", blk.Type)
		}
	}
	if key == nil {
		return nil, errors.New("no private key")
	}
	var leaf *x509.Certificate
	for _, cert := range certs {
		switch {
		case cert.IsCA:
			c.CAs.AddCert(cert)
			c.CAPEM = append(c.CAPEM, encodeCertPEM(cert.Raw)...)
		case leaf != nil:
			return nil, errors.New("more than one client certificate")
		default:
			leaf = cert
		}
	}
	if leaf == nil {
		return nil, errors.New("no client certificate")
	}
	if len(c.CAPEM) == 0 {
		return nil, errors.New("no CA certificate")
	}
	if !publicKeysEqual(key.Public(), leaf.PublicKey) {
		return nil, errors.New("the private key does not match the client certificate")
	}
	id, err := IdentityFromCert(leaf)
	if err != nil {
		return nil, err
	}
	// Verify at the end of the certificate's life (which the CA's covers):
	// the chain must hold even if the file has expired.
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:       c.CAs,
		CurrentTime: leaf.NotAfter.Add(-time.Second),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("client certificate is not signed by the file's CA: %w", err)
	}
	c.Identity = id
	c.Certificate = tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	return c, nil
}

// preambleServer returns the "# server: " value from the comment lines
// before the first PEM block, or "".
func preambleServer(data []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----BEGIN") {
			return ""
		}
		if s, ok := strings.CutPrefix(line, serverLine); ok {
			return strings.TrimSpace(s)
		}
	}
	return ""
}
