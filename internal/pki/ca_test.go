package pki_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/outposthq/outpost/internal/pki"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatalf("LoadOrCreateCA: %v", err)
	}
	return ca
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "pki")
	ca1, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatalf("first LoadOrCreateCA: %v", err)
	}
	if got := mode(t, dir); got != 0o700 {
		t.Errorf("dir mode = %04o, want 0700", got)
	}
	if got := mode(t, filepath.Join(dir, pki.CAKeyFile)); got != 0o600 {
		t.Errorf("key mode = %04o, want 0600", got)
	}
	if got := mode(t, filepath.Join(dir, pki.CACertFile)); got&0o022 != 0 {
		t.Errorf("cert mode = %04o, writable by others", got)
	}
	cert := ca1.Certificate()
	if !cert.IsCA || cert.MaxPathLen != 0 || !cert.MaxPathLenZero {
		t.Errorf("CA certificate: IsCA=%v MaxPathLen=%d MaxPathLenZero=%v", cert.IsCA, cert.MaxPathLen, cert.MaxPathLenZero)
	}
	if _, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("CA key type %T, want ECDSA", cert.PublicKey)
	}

	ca2, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatalf("second LoadOrCreateCA: %v", err)
	}
	if !ca2.Certificate().Equal(cert) {
		t.Error("second LoadOrCreateCA made a new CA; want the stored one")
	}
	if ca1.Fingerprint() != ca2.Fingerprint() {
		t.Error("fingerprints differ")
	}
	// The loaded CA signs certificates the first one's pool accepts.
	key, _ := pki.GenerateKey()
	certPEM, err := ca2.IssueClient(pki.Identity{Kind: pki.KindUser, Name: "a", Role: pki.RoleViewer}, key.Public(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := pki.ParseCertificatePEM(certPEM)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca1.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate from reloaded CA does not verify: %v", err)
	}
}

func TestLoadOrCreateCARefusesPartialOrMismatched(t *testing.T) {
	dir := t.TempDir()
	if _, err := pki.LoadOrCreateCA(dir); err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, pki.CAKeyFile)
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("only the certificate", func(t *testing.T) {
		if err := os.Remove(keyPath); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(keyPath, keyPEM, 0o600)
		if _, err := pki.LoadOrCreateCA(dir); err == nil {
			t.Fatal("LoadOrCreateCA with the key missing succeeded; want an error, not a new CA")
		}
		if _, err := os.Stat(keyPath); err == nil {
			t.Error("LoadOrCreateCA wrote a new key")
		}
	})
	t.Run("a key of another CA", func(t *testing.T) {
		other, err := os.ReadFile(filepath.Join(func() string { d := t.TempDir(); pki.LoadOrCreateCA(d); return d }(), pki.CAKeyFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyPath, other, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(keyPath, keyPEM, 0o600)
		_, err = pki.LoadOrCreateCA(dir)
		if err == nil {
			t.Fatal("LoadOrCreateCA with a mismatched key succeeded")
		}
		if bytes.Contains([]byte(err.Error()), pemBody(other)) {
			t.Errorf("error quotes the key: %v", err)
		}
	})
	t.Run("garbage key", func(t *testing.T) {
		if err := os.WriteFile(keyPath, []byte("-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(keyPath, keyPEM, 0o600)
		if _, err := pki.LoadOrCreateCA(dir); err == nil {
			t.Fatal("LoadOrCreateCA with a garbage key succeeded")
		}
	})
	if _, err := pki.LoadOrCreateCA(dir); err != nil {
		t.Fatalf("restored CA does not load: %v", err)
	}
}

// pemBody returns the base64 body of the first PEM block, to look for key
// material in strings.
func pemBody(p []byte) []byte {
	b, _ := pem.Decode(p)
	if b == nil {
		return p
	}
	enc := pem.EncodeToMemory(&pem.Block{Type: "X", Bytes: b.Bytes})
	lines := bytes.Split(enc, []byte("\n"))
	return lines[1] // the first 64 characters of base64
}

func TestIssueClient(t *testing.T) {
	ca := newCA(t)
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ca.Now = func() time.Time { return now }
	ecKey, _ := pki.GenerateKey()
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	id := pki.Identity{Kind: pki.KindGateway, Name: "gw-1", Datacenter: "seoul-1"}

	for _, pub := range []any{ecKey.Public(), edPub} {
		certPEM, err := ca.IssueClient(id, pub, 24*time.Hour)
		if err != nil {
			t.Fatalf("IssueClient(%T): %v", pub, err)
		}
		cert, err := pki.ParseCertificatePEM(certPEM)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pki.IdentityFromCert(cert)
		if err != nil || got != id {
			t.Errorf("IdentityFromCert = %+v, %v; want %+v", got, err, id)
		}
		if !cert.NotAfter.Equal(now.Add(24 * time.Hour)) {
			t.Errorf("NotAfter = %v, want %v", cert.NotAfter, now.Add(24*time.Hour))
		}
		if cert.NotBefore.After(now) {
			t.Errorf("NotBefore %v after issue time %v", cert.NotBefore, now)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("client certificate does not verify for client auth: %v", err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now}); err == nil {
			t.Error("client certificate verifies for server auth; a gateway could impersonate the control plane")
		}
	}

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, tc := range []struct {
		name string
		id   pki.Identity
		pub  any
		ttl  time.Duration
	}{
		{"invalid identity", pki.Identity{Kind: pki.KindUser, Name: "a"}, ecKey.Public(), time.Hour},
		{"zero ttl", id, ecKey.Public(), 0},
		{"ttl too long", id, ecKey.Public(), pki.MaxClientTTL + time.Second},
		{"RSA key", id, rsaKey.Public(), time.Hour},
		{"P-384 key", id, p384.Public(), time.Hour},
		{"no key", id, nil, time.Hour},
	} {
		if _, err := ca.IssueClient(tc.id, tc.pub, tc.ttl); err == nil {
			t.Errorf("IssueClient(%s) succeeded", tc.name)
		}
	}
}

func TestIdentityFromCertRefusesOtherCertificates(t *testing.T) {
	ca := newCA(t)
	server, err := ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.IdentityFromCert(server.Leaf); err == nil {
		t.Error("IdentityFromCert(server certificate) succeeded")
	}
	if _, err := pki.IdentityFromCert(ca.Certificate()); err == nil {
		t.Error("IdentityFromCert(CA certificate) succeeded")
	}
	if _, err := pki.IdentityFromCert(nil); err == nil {
		t.Error("IdentityFromCert(nil) succeeded")
	}
}

func TestSerialsAreRandom128Bit(t *testing.T) {
	ca := newCA(t)
	key, _ := pki.GenerateKey()
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		certPEM, err := ca.IssueClient(pki.Identity{Kind: pki.KindUser, Name: "a", Role: pki.RoleViewer}, key.Public(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := pki.ParseCertificatePEM(certPEM)
		if n := cert.SerialNumber.BitLen(); n != 127 {
			t.Errorf("serial has %d bits, want 127 (random 128-bit, positive)", n)
		}
		if cert.SerialNumber.Cmp(big.NewInt(0)) <= 0 {
			t.Errorf("serial %v not positive", cert.SerialNumber)
		}
		s := pki.SerialString(cert)
		if seen[s] {
			t.Fatalf("serial %s issued twice", s)
		}
		seen[s] = true
	}
}

func TestIssueServer(t *testing.T) {
	ca := newCA(t)
	cert, err := ca.IssueServer([]string{"127.0.0.1", "::1", "localhost", "cp.example.internal", ""}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.Certificate) != 2 || !bytes.Equal(cert.Certificate[1], ca.Certificate().Raw) {
		t.Error("server chain does not end with the CA certificate")
	}
	for _, name := range []string{pki.ServerName, "127.0.0.1", "::1", "localhost", "cp.example.internal"} {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: name}); err != nil {
			t.Errorf("server certificate does not verify for %q: %v", name, err)
		}
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "other.example"}); err == nil {
		t.Error("server certificate verifies for a host it was not issued for")
	}
	if _, err := ca.IssueServer(nil, 0); err == nil {
		t.Error("IssueServer with zero ttl succeeded")
	}
}

func TestParseCSR(t *testing.T) {
	key, _ := pki.GenerateKey()
	csr, err := pki.CreateCSR(key, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := pki.ParseCSR(csr)
	if err != nil {
		t.Fatalf("ParseCSR: %v", err)
	}
	if !key.PublicKey.Equal(pub) {
		t.Error("ParseCSR returned another key")
	}

	b, _ := pem.Decode(csr)
	tampered := append([]byte(nil), b.Bytes...)
	tampered[len(tampered)-5] ^= 0xff // inside the signature
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaCSR, _ := pki.CreateCSR(rsaKey, "x")
	for name, in := range map[string][]byte{
		"empty":          nil,
		"tampered":       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}),
		"wrong type":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes}),
		"RSA":            rsaCSR,
		"trailing block": append(append([]byte(nil), csr...), csr...),
	} {
		if _, err := pki.ParseCSR(in); err == nil {
			t.Errorf("ParseCSR(%s) succeeded", name)
		}
	}
}
