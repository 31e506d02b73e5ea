package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// File names of the CA in its directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// ServerName is a DNS name every server certificate carries; clients verify
// the control plane against it by default (see the package comment).
const ServerName = "controlplane.outpost.internal"

const (
	// caValidity is the CA's lifetime. Rotating a CA means re-issuing every
	// credential, so it is long; its key never leaves the data directory.
	caValidity = 10 * 365 * 24 * time.Hour
	// backdate tolerates clocks a little behind the issuer's.
	backdate = 5 * time.Minute
	// MaxClientTTL bounds client certificates (user and gateway).
	MaxClientTTL = 400 * 24 * time.Hour
)

// CA issues Outpost's certificates. It is safe for concurrent use.
type CA struct {
	// Now is the clock used for validity periods; nil means time.Now. Set
	// it before the CA is used.
	Now func() time.Time

	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
}

// LoadOrCreateCA returns the CA stored in dir (ca.crt, ca.key), creating
// dir (0700) and a new CA when neither file exists. It refuses a directory
// holding only one of the two, or a key that does not match the
// certificate, rather than replacing a CA that credentials depend on.
func LoadOrCreateCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return loadCA(certPath, keyPath)
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return createCA(dir, certPath, keyPath)
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, fmt.Errorf("pki: CA certificate: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, fmt.Errorf("pki: CA key: %w", keyErr)
	default:
		return nil, fmt.Errorf("pki: %s holds only one of %s and %s; restore the other or remove both to create a new CA (every credential must then be re-issued)", dir, CACertFile, CAKeyFile)
	}
}

func loadCA(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", filepath.Dir(certPath), err)
	}
	return ca, nil
}

// ParseCA builds a CA from its PEM certificate and PEM PKCS #8 key (the
// first block of each type counts; both may be one bundle), for CAs kept
// somewhere other than files.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("CA certificate is not a CA")
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, errors.New("CA key does not match the CA certificate")
	}
	return &CA{cert: cert, certPEM: encodeCertPEM(cert.Raw), key: key}, nil
}

func createCA(dir, certPath, keyPath string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: create %s: %w", dir, err)
	}
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The serial in the name tells two installations' CAs apart in
		// error messages ("certificate signed by unknown authority").
		Subject:               pkix.Name{Organization: []string{"Outpost"}, CommonName: "Outpost CA " + serial.Text(16)[:8]},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	keyPEM, err := encodeKeyPEM(key)
	if err != nil {
		return nil, err
	}
	// The key goes first: a crash in between leaves only the key, which
	// LoadOrCreateCA reports instead of silently making a second CA.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("pki: write CA key: %w", err)
	}
	if err := writeFileAtomic(certPath, encodeCertPEM(der), 0o644); err != nil {
		return nil, fmt.Errorf("pki: write CA certificate: %w", err)
	}
	return loadCA(certPath, keyPath)
}

// Certificate returns the CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA certificate in PEM.
func (ca *CA) CertPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// KeyPEM returns the CA's private key in PEM (PKCS #8), for storing the CA
// where other control plane replicas can load it with ParseCA. Handle the
// result as the most sensitive secret of the installation.
func (ca *CA) KeyPEM() ([]byte, error) { return encodeKeyPEM(ca.key) }

// Fingerprint returns the SHA-256 of the CA certificate (DER), which join
// tokens carry so a gateway can verify the control plane on first contact.
func (ca *CA) Fingerprint() [32]byte { return sha256.Sum256(ca.cert.Raw) }

// Pool returns a pool holding the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func (ca *CA) now() time.Time {
	if ca.Now != nil {
		return ca.Now()
	}
	return time.Now()
}

// IssueServer issues a server certificate for the given host names and IP
// addresses (ServerName is always added) with a new key, valid for ttl
// (capped at the CA's expiry). The chain includes the CA certificate so a
// gateway holding only the CA fingerprint can verify it.
func (ca *CA) IssueServer(hosts []string, ttl time.Duration) (tls.Certificate, error) {
	if ttl <= 0 {
		return tls.Certificate{}, fmt.Errorf("pki: server certificate ttl %v is not positive", ttl)
	}
	key, err := GenerateKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"Outpost"}, CommonName: "outpost control plane"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{ServerName},
	}
	for _, h := range hosts {
		switch ip := net.ParseIP(h); {
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		case h != "" && h != ServerName:
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := ca.sign(tmpl, key.Public(), ttl)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: parse issued certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// IssueClient issues a client certificate carrying id for the public key
// pub (ECDSA P-256 or Ed25519), valid for ttl (at most MaxClientTTL, and
// capped at the CA's expiry), and returns it in PEM.
func (ca *CA) IssueClient(id Identity, pub crypto.PublicKey, ttl time.Duration) (certPEM []byte, err error) {
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if ttl <= 0 || ttl > MaxClientTTL {
		return nil, fmt.Errorf("pki: client certificate ttl %v outside (0, %v]", ttl, MaxClientTTL)
	}
	if err := checkClientKey(pub); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"Outpost"}, CommonName: id.Name},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{id.URI()},
	}
	der, err := ca.sign(tmpl, pub, ttl)
	if err != nil {
		return nil, err
	}
	return encodeCertPEM(der), nil
}

func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, ttl time.Duration) ([]byte, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := ca.now()
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(ttl)
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	if !now.Before(tmpl.NotAfter) {
		return nil, errors.New("pki: the CA has expired")
	}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign certificate: %w", err)
	}
	return der, nil
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	b[0] &= 0x7f // positive in DER without a leading zero byte
	b[0] |= 0x40 // always 127 bits long, so its hex never loses digits
	return new(big.Int).SetBytes(b), nil
}

func checkClientKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("ECDSA key on %s: want P-256", k.Curve.Params().Name)
		}
		return nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return errors.New("malformed Ed25519 key")
		}
		return nil
	case nil:
		return errors.New("no public key")
	}
	return fmt.Errorf("unsupported public key type %T: want ECDSA P-256 or Ed25519", pub)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

func encodeCertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// ParseCertificatePEM parses the first certificate in PEM data. Other block
// types before it are skipped.
func ParseCertificatePEM(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM certificate")
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		return cert, nil
	}
}
