package sshexec

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/internal/testsshd"
)

// sshdOptions changes what startSSHD asks testsshd for.
type sshdOptions struct {
	// hostCA, when set, signs the host key into a host certificate that
	// sshd presents (HostCertificate).
	hostCA ssh.Signer
	// ecdsaHostKey adds an ECDSA host key next to the ed25519 one.
	ecdsaHostKey bool
	// userCA, when set, is trusted for user certificates (TrustedUserCAKeys).
	userCA ssh.PublicKey
	// sftpServer replaces internal-sftp with this program.
	sftpServer string
	// noAuthorizedKey leaves authorized_keys empty, so only certificates
	// or agent keys added later can log in.
	noAuthorizedKey bool
	// extraConfig are more sshd_config lines (no Match blocks).
	extraConfig []string
}

// testSSHD is a real sshd (internal/testsshd) listening on a random
// loopback address, stopped when the test ends, with a client key of its
// own.
type testSSHD struct {
	addr       string // host:port
	host       string // the loopback IP
	user       string
	hostKey    ssh.PublicKey // ed25519
	ecdsaKey   ssh.PublicKey // nil unless sshdOptions.ecdsaHostKey
	clientKey  ssh.Signer    // authorized unless noAuthorizedKey
	clientFile string        // clientKey as an OpenSSH private key file
	srv        *testsshd.Server
}

func newEd25519Signer(t testing.TB) (ssh.Signer, ed25519.PrivateKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, priv
}

func writePrivateKey(t testing.TB, path string, key any) {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// randomLoopback picks an address in 127.0.0.0/8 other than 127.0.0.1, so
// that tests of several packages running at once rarely collide.
func randomLoopback() (host string, port int) {
	return fmt.Sprintf("127.%d.%d.%d", 16+mrand.IntN(235), mrand.IntN(256), 2+mrand.IntN(250)),
		20000 + mrand.IntN(40000)
}

// startSSHD starts a real sshd through testsshd, the only launcher.
func startSSHD(t testing.TB, opt sshdOptions) *testSSHD {
	t.Helper()
	dir := t.TempDir()
	s := &testSSHD{}
	var clientPriv ed25519.PrivateKey
	s.clientKey, clientPriv = newEd25519Signer(t)
	s.clientFile = filepath.Join(dir, "client_ed25519")
	writePrivateKey(t, s.clientFile, clientPriv)

	extra := slices.Clone(opt.extraConfig)
	if opt.ecdsaHostKey {
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "host_ecdsa")
		writePrivateKey(t, f, priv)
		if s.ecdsaKey, err = ssh.NewPublicKey(&priv.PublicKey); err != nil {
			t.Fatal(err)
		}
		extra = append(extra, "HostKey "+f)
	}
	if opt.sftpServer != "" {
		extra = append(extra, "Subsystem sftp "+opt.sftpServer)
	}
	// OpenSSH's own limits rather than testsshd's higher ones, unless the
	// test sets them: the client must work against a stock server.
	for _, line := range []string{"MaxStartups 10:30:100", "MaxSessions 10"} {
		key, _, _ := strings.Cut(line, " ")
		if !slices.ContainsFunc(opt.extraConfig, func(l string) bool {
			f := strings.Fields(l)
			return len(f) > 0 && strings.EqualFold(f[0], key)
		}) {
			extra = append(extra, line)
		}
	}
	o := testsshd.Options{TrustedUserCA: opt.userCA, HostCA: opt.hostCA, ExtraConfig: extra}
	if !opt.noAuthorizedKey {
		o.AuthorizedKeys = []ssh.PublicKey{s.clientKey.PublicKey()}
	}
	srv := testsshd.Start(t, o)
	s.srv = srv
	s.addr, s.host, s.user, s.hostKey = srv.Addr, srv.IP, srv.User, srv.HostKey
	return s
}

func signUserCert(t testing.TB, ca ssh.Signer, key ssh.PublicKey, principal string) *ssh.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	cert := &ssh.Certificate{
		Key:             key,
		Serial:          serial.Uint64(),
		CertType:        ssh.UserCert,
		KeyId:           "test user",
		ValidPrincipals: []string{principal},
		ValidAfter:      uint64(time.Now().Add(-time.Hour).Unix()),
		ValidBefore:     uint64(time.Now().Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{
			"permit-pty": "", "permit-port-forwarding": "",
		}},
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return cert
}

// config returns a Config that logs in with the authorized client key and
// pins the ed25519 host key, with short timeouts for tests.
func (s *testSSHD) config() Config {
	return Config{
		Address:          s.addr,
		User:             s.user,
		Auth:             Auth{Signers: []ssh.Signer{s.clientKey}},
		HostKeys:         HostKeys{Pinned: []ssh.PublicKey{s.hostKey}},
		DialTimeout:      5 * time.Second,
		HandshakeTimeout: 5 * time.Second,
	}
}
