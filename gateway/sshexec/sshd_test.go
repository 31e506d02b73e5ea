package sshexec

import (
	"bytes"
	"cmp"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// sshdPath is the real OpenSSH server the tests run against.
const sshdPath = "/usr/sbin/sshd"

// sshdOptions changes what testSSHD configures.
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

// testSSHD is a real sshd listening on a random loopback address, stopped
// when the test ends.
type testSSHD struct {
	dir        string
	addr       string // host:port
	host       string // the loopback IP
	user       string
	hostKey    ssh.PublicKey // ed25519
	ecdsaKey   ssh.PublicKey // nil unless sshdOptions.ecdsaHostKey
	hostCert   *ssh.Certificate
	clientKey  ssh.Signer // authorized unless noAuthorizedKey
	clientFile string     // clientKey as an OpenSSH private key file
	authKeys   string     // authorized_keys path
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

var currentUser = sync.OnceValue(func() string {
	u, err := user.Current()
	if err != nil {
		return "root"
	}
	return u.Username
})

// startSSHD launches /usr/sbin/sshd -D with a config in a temp dir.
func startSSHD(t testing.TB, opt sshdOptions) *testSSHD {
	t.Helper()
	if _, err := os.Stat(sshdPath); err != nil {
		t.Skipf("no OpenSSH server: %v", err)
	}
	dir := t.TempDir()
	s := &testSSHD{dir: dir, user: currentUser()}

	hostSigner, hostPriv := newEd25519Signer(t)
	s.hostKey = hostSigner.PublicKey()
	hostKeyFile := filepath.Join(dir, "host_ed25519")
	writePrivateKey(t, hostKeyFile, hostPriv)

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

	var clientPriv ed25519.PrivateKey
	s.clientKey, clientPriv = newEd25519Signer(t)
	s.clientFile = filepath.Join(dir, "client_ed25519")
	writePrivateKey(t, s.clientFile, clientPriv)
	s.authKeys = filepath.Join(dir, "authorized_keys")
	var ak []byte
	if !opt.noAuthorizedKey {
		ak = ssh.MarshalAuthorizedKey(s.clientKey.PublicKey())
	}
	writeFile(t, s.authKeys, ak)

	if opt.userCA != nil {
		f := filepath.Join(dir, "user_ca.pub")
		writeFile(t, f, ssh.MarshalAuthorizedKey(opt.userCA))
		extra = append(extra, "TrustedUserCAKeys "+f)
	}

	for attempt := 0; ; attempt++ {
		host, port := randomLoopback()
		s.host, s.addr = host, net.JoinHostPort(host, fmt.Sprint(port))
		lines := extra
		if opt.hostCA != nil {
			// The certificate names the host, which changes per attempt.
			s.hostCert = signHostCert(t, opt.hostCA, s.hostKey, host)
			writeFile(t, hostKeyFile+"-cert.pub", ssh.MarshalAuthorizedKey(s.hostCert))
			lines = append(slices.Clone(extra), "HostCertificate "+hostKeyFile+"-cert.pub")
		}
		cfg := strings.Join(append([]string{
			"ListenAddress " + s.addr,
			"HostKey " + hostKeyFile,
			"AuthorizedKeysFile " + s.authKeys,
			"PidFile none",
			"StrictModes no",
			"UsePAM no",
			"PermitRootLogin prohibit-password",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"Subsystem sftp " + cmp.Or(opt.sftpServer, "internal-sftp"),
			"LogLevel ERROR",
		}, lines...), "\n") + "\n"
		cfgFile := filepath.Join(dir, "sshd_config")
		writeFile(t, cfgFile, []byte(cfg))
		err := s.launch(t, cfgFile)
		if err == nil {
			return s
		}
		if attempt == 4 {
			t.Fatalf("start sshd: %v", err)
		}
		t.Logf("start sshd on %s: %v; retrying on another address", s.addr, err)
	}
}

// launch runs sshd and waits until it accepts connections, or reports why
// it exited.
func (s *testSSHD) launch(t testing.TB, cfgFile string) error {
	var stderr syncBuffer
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", cfgFile)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("sshd exited: %v: %s", err, stderr.String())
		default:
		}
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			c.Close()
			t.Cleanup(func() {
				stop()
				if t.Failed() && stderr.Len() > 0 {
					t.Logf("sshd stderr:\n%s", stderr.String())
				}
			})
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	return errors.New("sshd did not accept connections within 10s")
}

func signHostCert(t testing.TB, ca ssh.Signer, key ssh.PublicKey, principal string) *ssh.Certificate {
	t.Helper()
	cert := &ssh.Certificate{
		Key:             key,
		Serial:          1,
		CertType:        ssh.HostCert,
		KeyId:           "test host",
		ValidPrincipals: []string{principal},
		ValidAfter:      uint64(time.Now().Add(-time.Hour).Unix()),
		ValidBefore:     uint64(time.Now().Add(time.Hour).Unix()),
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return cert
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

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (b *syncBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Len()
}
