package auth

import (
	"context"
	"crypto"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"

	"github.com/outposthq/outpost/internal/pki"
)

// File names in the control plane's data directory.
const (
	// PKIDir holds the CA (pki.LoadOrCreateCA(filepath.Join(dataDir, PKIDir))).
	PKIDir = "pki"
	// AdminCredentialFile is the admin credential written on first start.
	AdminCredentialFile = "admin.pem"
	// KEKFile is the default key-encryption key file (LoadOrCreateCA).
	KEKFile = "ca.kek"
)

// AdminName is the user name of the bootstrap admin credential.
const AdminName = "admin"

// EnsureAdminCredential makes sure path holds a usable admin credential of
// this CA that names server (the address a CLI on this machine dials). It
// writes a new one — fresh key, recorded certificate valid AdminCertTTL —
// when the file is missing or unusable, is from another CA, is revoked or
// is past two thirds of its life; when only the server address differs it
// rewrites the address and keeps the certificate. It reports whether it
// wrote the file. The key is made here and written only to path (0600).
func (a *Authority) EnsureAdminCredential(ctx context.Context, path, server string) (written bool, err error) {
	cred, err := pki.LoadCredential(path)
	reason := ""
	switch {
	case err != nil:
		reason = err.Error()
		if errors.Is(err, fs.ErrNotExist) {
			reason = "none yet"
		}
	case cred.Leaf().CheckSignatureFrom(a.ca.Certificate()) != nil:
		reason = "signed by another CA"
	case cred.Identity != (pki.Identity{Kind: pki.KindUser, Name: AdminName, Role: pki.RoleAdmin}):
		reason = "not the admin identity: " + cred.Identity.String()
	case !a.cfg.Now().Before(cred.RenewAt()):
		reason = "due for renewal"
	default:
		revoked, err := a.revoked.isRevoked(ctx, pki.SerialString(cred.Leaf()))
		if err != nil {
			return false, fmt.Errorf("auth: admin credential: %w", err)
		}
		if revoked {
			reason = "revoked"
		}
	}
	if reason == "" {
		if cred.Server == server {
			return false, nil
		}
		key, ok := cred.Certificate.PrivateKey.(crypto.Signer)
		if !ok {
			return false, fmt.Errorf("auth: admin credential: key type %T cannot sign", cred.Certificate.PrivateKey)
		}
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cred.Leaf().Raw})
		if err := pki.WriteCredential(path, a.ca.CertPEM(), certPEM, key, server); err != nil {
			return false, fmt.Errorf("auth: admin credential: %w", err)
		}
		return true, nil
	}

	key, err := pki.GenerateKey()
	if err != nil {
		return false, err
	}
	id := pki.Identity{Kind: pki.KindUser, Name: AdminName, Role: pki.RoleAdmin}
	certPEM, rec, err := a.IssueCredential(ctx, id, key.Public(), AdminCertTTL, "bootstrap")
	if err != nil {
		return false, err
	}
	if err := pki.WriteCredential(path, a.ca.CertPEM(), certPEM, key, server); err != nil {
		return false, fmt.Errorf("auth: admin credential: %w", err)
	}
	a.log.Info("admin credential written", "path", path, "serial", rec.GetSerial(), "why", reason)
	return true, nil
}

// ServerHosts returns the names and addresses the control plane's server
// certificate should carry for a listen address: its host when specific,
// and the loopback names and the machine's host name, plus extra (from
// configuration). pki.ServerName is always added by IssueServer.
func ServerHosts(listen string, extra ...string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" {
		if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
			hosts = append(hosts, h)
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	return append(hosts, extra...)
}

// LocalDialAddress returns an address a client on this machine can dial
// for the listen address addr: an unspecified host (":7443",
// "0.0.0.0:7443", "[::]:7443") becomes 127.0.0.1.
func LocalDialAddress(addr string) string {
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(h); h == "" || ip != nil && ip.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}
