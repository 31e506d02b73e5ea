package pki_test

import (
	"bytes"
	"crypto"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/outposthq/outpost/internal/pki"
)

// issue returns a client certificate for id and its key.
func issue(t *testing.T, ca *pki.CA, id pki.Identity, ttl time.Duration) ([]byte, crypto.Signer) {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.IssueClient(id, key.Public(), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, key
}

func TestCredentialRoundTrip(t *testing.T) {
	ca := newCA(t)
	id := pki.Identity{Kind: pki.KindUser, Name: "alice", Role: pki.RoleApprover}
	certPEM, key := issue(t, ca, id, 90*24*time.Hour)
	path := filepath.Join(t.TempDir(), "alice.pem")
	if err := pki.WriteCredential(path, ca.CertPEM(), certPEM, key, "cp.example:7443"); err != nil {
		t.Fatalf("WriteCredential: %v", err)
	}
	if got := mode(t, path); got != 0o600 {
		t.Errorf("credential mode = %04o, want 0600", got)
	}
	cred, err := pki.LoadCredential(path)
	if err != nil {
		t.Fatalf("LoadCredential: %v", err)
	}
	if diff := cmp.Diff(id, cred.Identity); diff != "" {
		t.Errorf("identity (-want +got):\n%s", diff)
	}
	if cred.Server != "cp.example:7443" {
		t.Errorf("Server = %q, want cp.example:7443", cred.Server)
	}
	if !bytes.Equal(cred.CAPEM, ca.CertPEM()) {
		t.Error("CAPEM differs from the CA")
	}
	if !cred.Leaf().PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		t.Error("loaded certificate is for another key")
	}
	life := cred.Leaf().NotAfter.Sub(cred.Leaf().NotBefore)
	if got, want := cred.RenewAt(), cred.Leaf().NotBefore.Add(life*2/3); !got.Equal(want) {
		t.Errorf("RenewAt = %v, want %v", got, want)
	}

	// NewCredential and Write round-trip too.
	mem, err := pki.NewCredential(ca.CertPEM(), certPEM, key, "other:1")
	if err != nil {
		t.Fatal(err)
	}
	path2 := filepath.Join(filepath.Dir(path), "copy.pem")
	if err := mem.Write(path2); err != nil {
		t.Fatal(err)
	}
	if again, err := pki.LoadCredential(path2); err != nil || again.Identity != id || again.Server != "other:1" || !again.Leaf().Equal(cred.Leaf()) {
		t.Errorf("Write then LoadCredential = %+v, %v", again, err)
	}
	os.Remove(path2)

	// Overwrite keeps the mode and replaces the content.
	certPEM2, key2 := issue(t, ca, pki.Identity{Kind: pki.KindUser, Name: "bob", Role: pki.RoleViewer}, time.Hour)
	if err := pki.WriteCredential(path, ca.CertPEM(), certPEM2, key2, ""); err != nil {
		t.Fatal(err)
	}
	cred2, err := pki.LoadCredential(path)
	if err != nil {
		t.Fatal(err)
	}
	if cred2.Identity.Name != "bob" || cred2.Server != "" {
		t.Errorf("after overwrite: %+v server %q", cred2.Identity, cred2.Server)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the credential (no temp files)", len(entries))
	}
}

func TestLoadCredentialRefusesOpenMode(t *testing.T) {
	ca := newCA(t)
	certPEM, key := issue(t, ca, pki.Identity{Kind: pki.KindUser, Name: "a", Role: pki.RoleAdmin}, time.Hour)
	path := filepath.Join(t.TempDir(), "a.pem")
	if err := pki.WriteCredential(path, ca.CertPEM(), certPEM, key, ""); err != nil {
		t.Fatal(err)
	}
	for _, m := range []os.FileMode{0o640, 0o604, 0o660, 0o644} {
		if err := os.Chmod(path, m); err != nil {
			t.Fatal(err)
		}
		if _, err := pki.LoadCredential(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("LoadCredential with mode %04o = %v, want a chmod 600 error", m, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadCredential(path); err != nil {
		t.Errorf("LoadCredential with mode 0400: %v", err)
	}
}

func TestParseCredentialRefusesBadFiles(t *testing.T) {
	ca := newCA(t)
	other := newCA(t)
	id := pki.Identity{Kind: pki.KindGateway, Name: "gw", Datacenter: "dc1"}
	certPEM, key := issue(t, ca, id, time.Hour)
	otherCert, otherKey := issue(t, other, id, time.Hour)
	good, err := pki.EncodeCredential(ca.CertPEM(), certPEM, key, "")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := keyBlock(t, good)
	otherKeyPEM := keyBlock(t, mustEncode(t, other.CertPEM(), otherCert, otherKey))
	serverCert, err := ca.IssueServer(nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	for name, data := range map[string][]byte{
		"empty":                  nil,
		"no key":                 cat(certPEM, ca.CertPEM()),
		"no certificate":         cat(keyPEM, ca.CertPEM()),
		"no CA":                  cat(certPEM, keyPEM),
		"two keys":               cat(certPEM, keyPEM, keyPEM, ca.CertPEM()),
		"two client certs":       cat(certPEM, certPEM, keyPEM, ca.CertPEM()),
		"key of another cert":    cat(certPEM, otherKeyPEM, ca.CertPEM()),
		"signed by another CA":   cat(otherCert, otherKeyPEM, ca.CertPEM()),
		"server certificate":     cat(pemCert(serverCert.Certificate[0]), keyPEMOf(t, serverCert.PrivateKey.(crypto.Signer)), ca.CertPEM()),
		"RSA-style key block":    cat(certPEM, bytes.Replace(keyPEM, []byte("PRIVATE KEY"), []byte("RSA PRIVATE KEY"), 2), ca.CertPEM()),
		"encrypted legacy block": cat(certPEM, []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nQUJD\n-----END ENCRYPTED PRIVATE KEY-----\n"), ca.CertPEM()),
	} {
		_, err := pki.ParseCredential(data)
		if err == nil {
			t.Errorf("ParseCredential(%s) succeeded", name)
			continue
		}
		for _, k := range [][]byte{keyPEM, otherKeyPEM} {
			if strings.Contains(err.Error(), string(pemBody(k))) {
				t.Errorf("ParseCredential(%s) error quotes a private key: %v", name, err)
			}
		}
	}
	if _, err := pki.ParseCredential(good); err != nil {
		t.Errorf("ParseCredential(good): %v", err)
	}
	if err := pki.WriteCredential(filepath.Join(t.TempDir(), "x.pem"), ca.CertPEM(), otherCert, otherKey, ""); err == nil {
		t.Error("WriteCredential of a certificate from another CA succeeded")
	}
	if _, err := pki.EncodeCredential(ca.CertPEM(), certPEM, key, "a\nb"); err == nil {
		t.Error("EncodeCredential with a line break in the server address succeeded")
	}
}

func TestExpiredCredentialLoads(t *testing.T) {
	ca := newCA(t)
	ca.Now = func() time.Time { return time.Now().Add(-4 * time.Minute) }
	certPEM, key := issue(t, ca, pki.Identity{Kind: pki.KindUser, Name: "old", Role: pki.RoleViewer}, 2*time.Minute)
	data, err := pki.EncodeCredential(ca.CertPEM(), certPEM, key, "")
	if err != nil {
		t.Fatalf("EncodeCredential(expired): %v", err)
	}
	cred, err := pki.ParseCredential(data)
	if err != nil {
		t.Fatalf("ParseCredential(expired): %v", err)
	}
	if !cred.Leaf().NotAfter.Before(time.Now()) {
		t.Error("test certificate is not expired")
	}
}

func mustEncode(t *testing.T, caPEM, certPEM []byte, key crypto.Signer) []byte {
	t.Helper()
	b, err := pki.EncodeCredential(caPEM, certPEM, key, "")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// keyBlock returns the PRIVATE KEY block of a credential file.
func keyBlock(t *testing.T, cred []byte) []byte {
	t.Helper()
	i := bytes.Index(cred, []byte("-----BEGIN PRIVATE KEY-----"))
	j := bytes.Index(cred, []byte("-----END PRIVATE KEY-----\n"))
	if i < 0 || j < 0 {
		t.Fatal("no key block in credential")
	}
	return cred[i : j+len("-----END PRIVATE KEY-----\n")]
}

func keyPEMOf(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	// A credential file is the only exported way to PEM-encode a key; use
	// a throwaway identity to get one.
	ca := newCA(t)
	certPEM, err := ca.IssueClient(pki.Identity{Kind: pki.KindUser, Name: "k", Role: pki.RoleViewer}, key.Public(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return keyBlock(t, mustEncode(t, ca.CertPEM(), certPEM, key))
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
