package pki_test

import (
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/pki"
)

// handshake runs one real TLS handshake over loopback TCP and returns what
// the server saw and the client's error.
func handshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		state tls.ConnectionState
		err   error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, server)
		err = tc.Handshake()
		if err == nil {
			// TLS 1.3 clients finish before the server has checked their
			// certificate; a read makes the server's verdict reach them.
			_, err = tc.Write([]byte("ok"))
		}
		done <- result{tc.ConnectionState(), err}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, client)
	cerr := tc.Handshake()
	if cerr == nil {
		buf := make([]byte, 2)
		_, cerr = tc.Read(buf)
	}
	c.Close()
	r := <-done
	if cerr == nil && r.err != nil {
		cerr = fmt.Errorf("server: %w", r.err)
	}
	return r.state, cerr
}

func loadCred(t *testing.T, ca *pki.CA, id pki.Identity, ttl time.Duration) *pki.Credential {
	t.Helper()
	certPEM, key := issue(t, ca, id, ttl)
	data, err := pki.EncodeCredential(ca.CertPEM(), certPEM, key, "")
	if err != nil {
		t.Fatal(err)
	}
	cred, err := pki.ParseCredential(data)
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

func TestMutualTLS(t *testing.T) {
	ca := newCA(t)
	serverCert, err := ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := pki.ServerTLSConfig(ca, serverCert)
	alice := pki.Identity{Kind: pki.KindUser, Name: "alice", Role: pki.RoleDeployer}
	cred := loadCred(t, ca, alice, time.Hour)

	t.Run("client certificate carries the identity", func(t *testing.T) {
		state, err := handshake(t, serverCfg, pki.ClientTLSConfig(cred, ""))
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		if state.Version != tls.VersionTLS13 {
			t.Errorf("version %x, want TLS 1.3", state.Version)
		}
		if len(state.PeerCertificates) == 0 {
			t.Fatal("server saw no client certificate")
		}
		id, err := pki.IdentityFromCert(state.PeerCertificates[0])
		if err != nil || id != alice {
			t.Errorf("server saw %+v, %v; want %+v", id, err, alice)
		}
	})
	t.Run("by IP address", func(t *testing.T) {
		if _, err := handshake(t, serverCfg, pki.ClientTLSConfig(cred, "127.0.0.1")); err != nil {
			t.Errorf("handshake with ServerName 127.0.0.1: %v", err)
		}
	})
	t.Run("wrong server name", func(t *testing.T) {
		if _, err := handshake(t, serverCfg, pki.ClientTLSConfig(cred, "evil.example")); err == nil {
			t.Error("client accepted a server certificate for another name")
		}
	})
	t.Run("no client certificate is allowed at the TLS layer", func(t *testing.T) {
		cfg, err := pki.ClientTLSConfigForCA(ca.CertPEM(), "")
		if err != nil {
			t.Fatal(err)
		}
		state, err := handshake(t, serverCfg, cfg)
		if err != nil {
			t.Fatalf("handshake without client certificate: %v", err)
		}
		if len(state.PeerCertificates) != 0 {
			t.Error("server saw a client certificate")
		}
	})
	t.Run("client certificate from another CA", func(t *testing.T) {
		stranger := loadCred(t, newCA(t), alice, time.Hour)
		stranger.CAs = cred.CAs // trusts our server, but its certificate is foreign
		// Go's client does not offer a certificate the server's CA list
		// does not cover; either way the server must not see it.
		state, err := handshake(t, serverCfg, pki.ClientTLSConfig(stranger, ""))
		if err == nil && len(state.PeerCertificates) != 0 {
			t.Error("server accepted a client certificate from another CA")
		}
		// A client that sends it anyway is refused.
		pushy := pki.ClientTLSConfig(stranger, "")
		pushy.Certificates = nil
		pushy.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &stranger.Certificate, nil
		}
		if _, err := handshake(t, serverCfg, pushy); err == nil {
			t.Error("server accepted a client certificate from another CA")
		}
	})
	t.Run("server from another CA", func(t *testing.T) {
		other := newCA(t)
		otherCert, err := other.IssueServer(nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := handshake(t, pki.ServerTLSConfig(other, otherCert), pki.ClientTLSConfig(cred, "")); err == nil {
			t.Error("client accepted a server from another CA")
		}
	})
	t.Run("expired client certificate", func(t *testing.T) {
		old := newCA(t)
		old.Now = func() time.Time { return time.Now().Add(-4 * time.Minute) }
		expired := loadCred(t, old, alice, 2*time.Minute)
		oldServer, err := old.IssueServer(nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		old.Now = nil
		if _, err := handshake(t, pki.ServerTLSConfig(old, oldServer), pki.ClientTLSConfig(expired, "")); err == nil {
			t.Error("server accepted an expired client certificate")
		}
	})
	t.Run("TLS 1.2 refused", func(t *testing.T) {
		cfg := pki.ClientTLSConfig(cred, "")
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		if _, err := handshake(t, serverCfg, cfg); err == nil {
			t.Error("server accepted TLS 1.2")
		}
	})
}

func TestJoinTLSConfig(t *testing.T) {
	ca := newCA(t)
	serverCert, err := ca.IssueServer(nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := pki.ServerTLSConfig(ca, serverCert)

	if _, err := handshake(t, serverCfg, pki.JoinTLSConfig(ca.Fingerprint(), "")); err != nil {
		t.Errorf("join handshake with the right fingerprint: %v", err)
	}
	if _, err := handshake(t, serverCfg, pki.JoinTLSConfig(sha256.Sum256([]byte("other")), "")); err == nil {
		t.Error("join handshake with a wrong fingerprint succeeded")
	}
	if _, err := handshake(t, serverCfg, pki.JoinTLSConfig(ca.Fingerprint(), "evil.example")); err == nil {
		t.Error("join handshake accepted a certificate for another name")
	}

	// An impostor may send our (public) CA certificate in its chain, but
	// cannot have its own leaf signed by it.
	impostorCA := newCA(t)
	impostor, err := impostorCA.IssueServer(nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	impostor.Certificate = [][]byte{impostor.Certificate[0], ca.Certificate().Raw}
	_, err = handshake(t, pki.ServerTLSConfig(impostorCA, impostor), pki.JoinTLSConfig(ca.Fingerprint(), ""))
	if err == nil {
		t.Error("join handshake accepted an impostor presenting the pinned CA certificate")
	}

	// A client certificate (same CA) is not a server certificate.
	gw := loadCred(t, ca, pki.Identity{Kind: pki.KindGateway, Name: "gw", Datacenter: "dc"}, time.Hour)
	fake := gw.Certificate
	fake.Certificate = [][]byte{fake.Certificate[0], ca.Certificate().Raw}
	if _, err := handshake(t, pki.ServerTLSConfig(ca, fake), pki.JoinTLSConfig(ca.Fingerprint(), "")); err == nil {
		t.Error("join handshake accepted a gateway's client certificate as a server certificate")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Logf("error: %v", err)
	}
}

func TestJoinToken(t *testing.T) {
	fp := sha256.Sum256([]byte("ca"))
	tok, err := pki.NewJoinToken(fp)
	if err != nil {
		t.Fatal(err)
	}
	enc := tok.Encode()
	if !strings.HasPrefix(enc, pki.JoinTokenPrefix) {
		t.Errorf("token %q lacks prefix", enc)
	}
	secret := strings.TrimPrefix(strings.SplitN(enc, ".", 2)[0], pki.JoinTokenPrefix)
	if len(secret) != 43 {
		t.Errorf("secret part has %d characters, want 43 (32 bytes)", len(secret))
	}
	got, err := pki.ParseJoinToken(" " + enc + "\n")
	if err != nil {
		t.Fatalf("ParseJoinToken: %v", err)
	}
	if got.Encode() != enc || got.CAFingerprint != fp || got.Hash() != tok.Hash() || got.ID() != tok.ID() {
		t.Error("parsed token differs")
	}
	if len(tok.ID()) != 16 {
		t.Errorf("ID %q is not 16 hex digits", tok.ID())
	}
	tok2, _ := pki.NewJoinToken(fp)
	if tok2.Encode() == enc || tok2.Hash() == tok.Hash() {
		t.Error("two tokens are equal")
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		if s := fmt.Sprintf(format, tok); strings.Contains(s, secret) {
			t.Errorf("Sprintf(%q, token) = %q reveals the secret", format, s)
		}
		if s := fmt.Sprintf(format, struct{ T pki.JoinToken }{tok}); strings.Contains(s, secret) {
			t.Errorf("Sprintf(%q, struct with token) = %q reveals the secret", format, s)
		}
	}

	fpPart := strings.SplitN(enc, ".", 2)[1]
	for _, bad := range []string{
		"",
		secret,
		"opjt_" + secret,
		"opjt_" + secret + ".",
		"opjt_" + secret[:42] + "." + fpPart,
		"opjt_" + secret + "A." + fpPart,
		"opjt_" + secret + "." + fpPart + "A",
		"opjt_" + strings.Replace(secret, secret[:1], "!", 1) + "." + fpPart,
		"opjt_" + secret + "=." + fpPart,
		"xxxx_" + secret + "." + fpPart,
	} {
		_, err := pki.ParseJoinToken(bad)
		if err == nil {
			t.Errorf("ParseJoinToken(%q) succeeded", bad)
			continue
		}
		if strings.Contains(err.Error(), secret[:20]) {
			t.Errorf("ParseJoinToken error quotes the secret: %v", err)
		}
	}
}
