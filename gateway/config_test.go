package gateway

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"github.com/outposthq/outpost/gateway/sshexec"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestConfigCheckAndSetDefaults(t *testing.T) {
	signer := testSigner(t)
	valid := func() Config {
		return Config{ControlPlane: "127.0.0.1:7443", Datacenter: "dc-1", CacheDir: "/tmp/x", SSH: SSHConfig{Signers: []ssh.Signer{signer}}}
	}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"valid", func(*Config) {}, ""},
		{"no control plane", func(c *Config) { c.ControlPlane = "" }, "ControlPlane is required"},
		{"no datacenter", func(c *Config) { c.Datacenter = "" }, "Datacenter is required"},
		{"no cache dir", func(c *Config) { c.CacheDir = "" }, "CacheDir is required"},
		{"negative cache size", func(c *Config) { c.CacheMaxBytes = -1 }, "CacheMaxBytes -1 is negative"},
		{"negative concurrency", func(c *Config) { c.Concurrency = -1 }, "Concurrency -1 is negative"},
		{"max below min", func(c *Config) { c.MinBackoff, c.MaxBackoff = time.Second, time.Millisecond }, "MaxBackoff 1ms is below MinBackoff 1s"},
		{"no credentials", func(c *Config) { c.SSH = SSHConfig{User: "x"} }, "no credentials"},
		{"nil signer", func(c *Config) { c.SSH.Signers = []ssh.Signer{nil} }, "SSH.Signers[0] is nil"},
		{"password only", func(c *Config) { c.SSH = SSHConfig{PasswordFile: "/pw"} }, ""},
		{"token without credential file", func(c *Config) { c.JoinToken = "opjt_x" }, "JoinToken needs a CredentialFile"},
		{"datacenter from the credential", func(c *Config) { c.Datacenter, c.CredentialFile = "", "/cred.pem" }, ""},
		{"CA only", func(c *Config) { c.SSH = SSHConfig{CAKeyFile: "/ca"} }, ""},
		{"CA validity too short", func(c *Config) { c.SSH = SSHConfig{CAKeyFile: "/ca", CertValidity: time.Minute} }, "CertValidity 1m0s is outside"},
		{"CA validity too long", func(c *Config) { c.SSH = SSHConfig{CAKeyFile: "/ca", CertValidity: 25 * time.Hour} }, "is outside"},
		{"validity without CA", func(c *Config) { c.SSH.CertValidity = time.Hour }, "need SSH.CAKeyFile"},
		{"empty source addresses", func(c *Config) { c.SSH = SSHConfig{CAKeyFile: "/ca", CertSourceAddresses: []netip.Prefix{}} }, "CertSourceAddresses is empty"},
		{"bad bind address", func(c *Config) { c.SSH.LocalAddr = "gw.example" }, "LocalAddr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(&c)
			err := c.CheckAndSetDefaults()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckAndSetDefaults = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("CheckAndSetDefaults = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}

	c := valid()
	if err := c.CheckAndSetDefaults(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if c.Name != host+"-dc-1" || c.Concurrency != DefaultConcurrency || c.MinBackoff != DefaultMinBackoff ||
		c.MaxBackoff != DefaultMaxBackoff || c.Version != DefaultVersion || c.Logger == nil || c.TracerProvider == nil || c.Now == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func writeKey(t *testing.T, dir, name string, priv ed25519.PrivateKey, passphrase string) string {
	t.Helper()
	var block *pem.Block
	var err error
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadAuth(t *testing.T) {
	dir := t.TempDir()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	keyFile := writeKey(t, dir, "id_ed25519", priv, "")
	sshPub, _ := ssh.NewPublicKey(pub)
	ca := testSigner(t)
	cert := &ssh.Certificate{Key: sshPub, CertType: ssh.UserCert, ValidPrincipals: []string{"deploy"}, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile+"-cert.pub", ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	_, priv2, _ := ed25519.GenerateKey(rand.Reader)
	plainKey := writeKey(t, dir, "plain", priv2, "")
	extra := testSigner(t)
	pwFile := filepath.Join(dir, "pw")
	os.WriteFile(pwFile, []byte(" s3cret pass\r\n"), 0o600)
	known := filepath.Join(dir, "known_hosts")
	os.WriteFile(known, nil, 0o600)

	auth, err := loadAuth(SSHConfig{KeyFiles: []string{keyFile, plainKey}, Signers: []ssh.Signer{extra}, PasswordFile: pwFile, KnownHostsFiles: []string{known}, Agent: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(auth.Signers) != 4 {
		t.Fatalf("%d signers, want certificate, two keys and the given signer", len(auth.Signers))
	}
	if _, ok := auth.Signers[0].PublicKey().(*ssh.Certificate); !ok {
		t.Errorf("first signer is %s, want the certificate", auth.Signers[0].PublicKey().Type())
	}
	if auth.Password != " s3cret pass" {
		t.Errorf("password = %q, want the file's content without the line ending", auth.Password)
	}
	if !auth.Agent || len(auth.KeyFiles) != 0 {
		t.Errorf("auth = %+v, want Agent and keys loaded (no KeyFiles left for per-dial loading)", auth)
	}

	encrypted := writeKey(t, dir, "encrypted", priv2, "pass")
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	otherCertKey := writeKey(t, dir, "other", priv2, "")
	os.WriteFile(otherCertKey+"-cert.pub", ssh.MarshalAuthorizedKey(cert), 0o644)
	tests := []struct {
		name string
		cfg  SSHConfig
		want string
	}{
		{"encrypted key", SSHConfig{KeyFiles: []string{encrypted}}, "is encrypted; load it into ssh-agent"},
		{"missing key", SSHConfig{KeyFiles: []string{filepath.Join(dir, "nope")}}, "no such file"},
		{"certificate of another key", SSHConfig{KeyFiles: []string{otherCertKey}}, "certifies another key"},
		{"empty password", SSHConfig{PasswordFile: empty}, "is empty"},
		{"missing known_hosts", SSHConfig{Agent: true, KnownHostsFiles: []string{filepath.Join(dir, "nope")}}, "known_hosts"},
	}
	for _, tt := range tests {
		_, err := loadAuth(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: loadAuth = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestSSHConfigForNode(t *testing.T) {
	hostKey := testSigner(t).PublicKey()
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey)))
	limiter := sshexec.NewDialLimiter(4)
	g := &Gateway{cfg: Config{SSH: SSHConfig{User: "deploy", KnownHostsFiles: []string{"/etc/kh"}}}, log: slogTo(&syncBuffer{}), dials: limiter}

	c, err := g.sshConfig(&outpostv1.Node{Id: "n1", Address: "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.User != "deploy" || len(c.HostKeys.Pinned) != 0 || len(c.HostKeys.KnownHostsFiles) != 1 {
		t.Errorf("node without pinned keys: %+v, want default user and the known_hosts files", c)
	}
	if c.DialLimiter != limiter {
		t.Errorf("node's dial limiter = %p, want the gateway's shared one %p", c.DialLimiter, limiter)
	}
	c, err = g.sshConfig(&outpostv1.Node{Id: "n1", Address: "10.0.0.1", User: "app", HostKeys: []string{line}})
	if err != nil {
		t.Fatal(err)
	}
	if c.User != "app" || len(c.HostKeys.Pinned) != 1 || len(c.HostKeys.KnownHostsFiles) != 0 ||
		string(c.HostKeys.Pinned[0].Marshal()) != string(hostKey.Marshal()) {
		t.Errorf("node with a pinned key: %+v, want its user and only the pinned key", c)
	}
	if _, err := g.sshConfig(&outpostv1.Node{Id: "n1", HostKeys: []string{"ssh-ed25519 garbage"}}); err == nil || !strings.Contains(err.Error(), "host_keys[0]") {
		t.Errorf("bad pinned key: %v, want an error naming host_keys[0]", err)
	}
	g.cfg.SSH.User = ""
	if _, err := g.sshConfig(&outpostv1.Node{Id: "n1"}); err == nil || !strings.Contains(err.Error(), "no SSH user") {
		t.Errorf("no user anywhere: %v, want an error", err)
	}
}

func TestNewTakesIdentityFromTheCredentialFile(t *testing.T) {
	dir := t.TempDir()
	credFile := filepath.Join(dir, "gateway.pem")
	writeGatewayCredential(t, credFile, "gw-seoul", "seoul-1")
	base := func() Config {
		return Config{ControlPlane: "127.0.0.1:7443", CacheDir: filepath.Join(dir, "cache"), CredentialFile: credFile, SSH: SSHConfig{Signers: []ssh.Signer{testSigner(t)}}}
	}
	g, err := New(base())
	if err != nil {
		t.Fatal(err)
	}
	if g.cfg.Name != "gw-seoul" || g.cfg.Datacenter != "seoul-1" {
		t.Errorf("name %q, datacenter %q; want the credential's gw-seoul, seoul-1", g.cfg.Name, g.cfg.Datacenter)
	}
	for _, tt := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"other datacenter", func(c *Config) { c.Datacenter = "busan-1" }, `bound to datacenter "seoul-1", not "busan-1"`},
		{"other name", func(c *Config) { c.Name = "gw-x" }, `is for gateway "gw-seoul", not "gw-x"`},
		{"no file, no token", func(c *Config) { c.CredentialFile = filepath.Join(dir, "none.pem") }, "no join token"},
	} {
		c := base()
		tt.mutate(&c)
		if _, err := New(c); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: New = %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	// With a token and no file yet, the name defaults to the host's.
	c := base()
	c.CredentialFile, c.JoinToken = filepath.Join(dir, "new.pem"), "opjt_secret"
	g, err = New(c)
	if err != nil {
		t.Fatal(err)
	}
	if host, _ := os.Hostname(); g.cfg.Name != host || g.cfg.Datacenter != "" {
		t.Errorf("name %q, datacenter %q before joining; want %q and none", g.cfg.Name, g.cfg.Datacenter, host)
	}
}

// writeGatewayCredential writes a credential of gateway name in dc, signed
// by a throwaway CA.
func writeGatewayCredential(t *testing.T, path, name, dc string) {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueClient(pki.Identity{Kind: pki.KindGateway, Name: name, Datacenter: dc}, key.Public(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCredential(path, ca.CertPEM(), cert, key, "127.0.0.1:7443"); err != nil {
		t.Fatal(err)
	}
}
