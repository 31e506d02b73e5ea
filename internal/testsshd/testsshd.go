package testsshd

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// SSHDPath is the OpenSSH daemon the package runs. It must be an absolute
// path: sshd refuses to re-exec itself otherwise.
const SSHDPath = "/usr/sbin/sshd"

// privSepDir is the privilege-separation directory sshd insists on.
const privSepDir = "/run/sshd"

const (
	// startAttempts bounds retries when the chosen address turns out to be
	// taken by another test package between probing and sshd's bind.
	startAttempts = 5
	// readyTimeout bounds how long one attempt waits for the SSH banner.
	readyTimeout = 10 * time.Second
)

// Options configures a server. The zero value is a server that accepts no
// client keys.
type Options struct {
	// AuthorizedKeys may log in as Server.User.
	AuthorizedKeys []ssh.PublicKey
	// TrustedUserCA, if set, is trusted to sign user certificates
	// (TrustedUserCAKeys). Certificates must name Server.User as principal.
	TrustedUserCA ssh.PublicKey
	// HostCertificate makes the server also present a host certificate for
	// its IP, signed by a fresh CA exposed as Server.HostCA.
	HostCertificate bool
	// ExtraConfig holds sshd_config lines. They take precedence over the
	// defaults (sshd keeps the first value of a keyword); a "Match" line and
	// everything after it go at the end of the file, where Match belongs.
	// A "Subsystem sftp ..." line replaces the default one (sshd refuses a
	// subsystem defined twice), for example to start SFTP sessions in
	// another directory with "internal-sftp -d DIR".
	ExtraConfig []string
	// IP is the loopback address to listen on; empty allocates a random
	// 127.R.x.y address.
	IP string
}

// Server is a running sshd.
type Server struct {
	Addr    string // ip:port
	IP      string
	Port    int
	HostKey ssh.PublicKey
	// HostCA signs the host certificate; nil unless Options.HostCertificate.
	HostCA ssh.PublicKey
	// User is the account keys log in as: the user running the test.
	User string
	// Dir holds the config, keys and authorized_keys of this server.
	Dir string

	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{} // closed when cmd.Wait returns
	once   sync.Once
}

// Start starts sshd and waits until it answers with an SSH banner. It calls
// tb.Fatal when sshd is missing or does not come up, and kills the server on
// tb.Cleanup.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if _, err := os.Stat(SSHDPath); err != nil {
		tb.Fatalf("testsshd: %s not found (install openssh-server; make test does it): %v", SSHDPath, err)
	}
	if err := os.MkdirAll(privSepDir, 0o755); err != nil {
		tb.Fatalf("testsshd: create privilege separation dir %s (run as root?): %v", privSepDir, err)
	}
	u, err := user.Current()
	if err != nil {
		tb.Fatalf("testsshd: current user: %v", err)
	}

	dir := tb.TempDir()
	s := &Server{User: u.Username, Dir: dir}
	hostKeyPath, err := s.writeKeys(dir, opts)
	if err != nil {
		tb.Fatalf("testsshd: %v", err)
	}

	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		ip := opts.IP
		if ip == "" {
			ip = randomLoopbackIP()
		}
		port, err := freePort(ip)
		if err != nil {
			lastErr = err
			continue
		}
		cfgPath := filepath.Join(dir, "sshd_config")
		cfg := config(net.JoinHostPort(ip, strconv.Itoa(port)), hostKeyPath, dir, opts)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			tb.Fatalf("testsshd: write config: %v", err)
		}
		if opts.HostCertificate {
			if err := s.writeHostCert(dir, ip); err != nil {
				tb.Fatalf("testsshd: %v", err)
			}
		}
		if err := s.run(cfgPath, ip, port); err != nil {
			// Usually the port was taken between probing and binding; a new
			// address is cheap.
			lastErr = err
			continue
		}
		tb.Cleanup(func() {
			s.Kill()
			if tb.Failed() {
				tb.Logf("testsshd %s stderr:\n%s", s.Addr, s.stderr.String())
			}
		})
		return s
	}
	tb.Fatalf("testsshd: sshd did not start after %d attempts: %v", startAttempts, lastErr)
	return nil
}

// writeKeys creates the host key (and certificate), authorized_keys and the
// trusted user CA file, and returns the host key path.
func (s *Server) writeKeys(dir string, opts Options) (string, error) {
	hostPub, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generate host key: %w", err)
	}
	hostKeyPath := filepath.Join(dir, "ssh_host_ed25519_key")
	if err := writePrivateKey(hostKeyPath, hostPriv); err != nil {
		return "", err
	}
	if s.HostKey, err = ssh.NewPublicKey(hostPub); err != nil {
		return "", fmt.Errorf("host public key: %w", err)
	}

	var ak bytes.Buffer
	for _, k := range opts.AuthorizedKeys {
		ak.Write(ssh.MarshalAuthorizedKey(k))
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ak.Bytes(), 0o600); err != nil {
		return "", fmt.Errorf("write authorized_keys: %w", err)
	}
	if opts.TrustedUserCA != nil {
		if err := os.WriteFile(filepath.Join(dir, "trusted_user_ca"), ssh.MarshalAuthorizedKey(opts.TrustedUserCA), 0o600); err != nil {
			return "", fmt.Errorf("write trusted user CA: %w", err)
		}
	}
	return hostKeyPath, nil
}

// writeHostCert signs the host key for ip with a fresh CA. It runs once the
// IP is known because the certificate's principal is the IP.
func (s *Server) writeHostCert(dir, ip string) error {
	caPub, caPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate host CA: %w", err)
	}
	caSigner, err := ssh.NewSignerFromKey(caPriv)
	if err != nil {
		return fmt.Errorf("host CA signer: %w", err)
	}
	if s.HostCA, err = ssh.NewPublicKey(caPub); err != nil {
		return fmt.Errorf("host CA public key: %w", err)
	}
	cert := &ssh.Certificate{
		Key:             s.HostKey,
		CertType:        ssh.HostCert,
		KeyId:           "testsshd " + ip,
		ValidPrincipals: []string{ip, "localhost"},
		ValidAfter:      0,
		ValidBefore:     ssh.CertTimeInfinity,
	}
	if err := cert.SignCert(rand.Reader, caSigner); err != nil {
		return fmt.Errorf("sign host certificate: %w", err)
	}
	path := filepath.Join(dir, "ssh_host_ed25519_key-cert.pub")
	if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(cert), 0o600); err != nil {
		return fmt.Errorf("write host certificate: %w", err)
	}
	return nil
}

func writePrivateKey(path string, key ed25519.PrivateKey) error {
	block, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		return fmt.Errorf("marshal %s: %w", filepath.Base(path), err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// config renders sshd_config. Extra lines come first because sshd keeps the
// first value it reads for a keyword; Match blocks must come last.
func config(listen, hostKeyPath, dir string, opts Options) string {
	var head, match []string
	sftpSubsystem := "Subsystem sftp internal-sftp"
	for i, line := range opts.ExtraConfig {
		f := strings.Fields(line)
		if len(f) > 0 && strings.EqualFold(f[0], "Match") {
			match = opts.ExtraConfig[i:]
			break
		}
		if len(f) > 1 && strings.EqualFold(f[0], "Subsystem") && f[1] == "sftp" {
			sftpSubsystem = line
			continue
		}
		head = append(head, line)
	}
	lines := append([]string{}, head...)
	lines = append(lines,
		"ListenAddress "+listen,
		"HostKey "+hostKeyPath,
	)
	if opts.HostCertificate {
		lines = append(lines, "HostCertificate "+hostKeyPath+"-cert.pub")
	}
	if opts.TrustedUserCA != nil {
		lines = append(lines, "TrustedUserCAKeys "+filepath.Join(dir, "trusted_user_ca"))
	}
	lines = append(lines,
		"AuthorizedKeysFile "+filepath.Join(dir, "authorized_keys"),
		"PidFile none",
		"StrictModes no",
		"UsePAM no",
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		sftpSubsystem,
		"MaxStartups 100:30:200",
		"MaxSessions 64",
		"LogLevel ERROR",
	)
	lines = append(lines, match...)
	return strings.Join(lines, "\n") + "\n"
}

// run starts sshd with cfgPath and waits for its banner on ip:port. On
// error the process is gone.
func (s *Server) run(cfgPath, ip string, port int) error {
	stderr := &syncBuffer{}
	cmd := exec.Command(SSHDPath, "-D", "-e", "-f", cfgPath)
	cmd.Stderr = stderr
	cmd.Dir = s.Dir
	// Session processes inherit sshd's stderr; should one escape the kill,
	// Wait must still return once sshd itself is dead.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", SSHDPath, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	if err := waitBanner(addr, exited); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%s on %s: %w; stderr:\n%s", SSHDPath, addr, err, stderr.String())
	}
	s.Addr, s.IP, s.Port = addr, ip, port
	s.cmd, s.stderr, s.exited = cmd, stderr, exited
	return nil
}

// waitBanner polls addr until it completes an SSH identification line, the
// process exits, or readyTimeout passes.
func waitBanner(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("sshd exited")
		default:
		}
		if lastErr = readBanner(addr); lastErr == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("sshd exited")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("no SSH banner within %v: %w", readyTimeout, lastErr)
}

func readBanner(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read banner: %w", err)
	}
	if !strings.HasPrefix(line, "SSH-2.0-") {
		return fmt.Errorf("unexpected banner %q", line)
	}
	return nil
}

// KnownHostsLine returns the known_hosts line for the server's host key:
// "[ip]:port ssh-ed25519 AAAA…" (or "ip …" on port 22).
func (s *Server) KnownHostsLine() string {
	return knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, s.HostKey)
}

// CertAuthorityLine returns a known_hosts line trusting HostCA for this
// server's address, or "" when the server has no host certificate.
func (s *Server) CertAuthorityLine() string {
	if s.HostCA == nil {
		return ""
	}
	return "@cert-authority " + knownhosts.Normalize(s.Addr) + " " + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.HostCA)))
}

// WriteKnownHosts writes KnownHostsLine to a new file in a temp dir and
// returns its path.
func (s *Server) WriteKnownHosts(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "known_hosts")
	if err := os.WriteFile(path, []byte(s.KnownHostsLine()+"\n"), 0o600); err != nil {
		tb.Fatalf("testsshd: write known_hosts: %v", err)
	}
	return path
}

// Kill stops sshd with SIGKILL, along with every session and command it
// forked, as if the machine died. It is safe to call more than once.
func (s *Server) Kill() {
	s.once.Do(func() {
		killTree(s.cmd.Process.Pid)
		<-s.exited
	})
}

// ClientKey returns a fresh ed25519 client key.
func ClientKey(tb testing.TB) (ssh.Signer, ssh.PublicKey) {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatalf("testsshd: generate client key: %v", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		tb.Fatalf("testsshd: client signer: %v", err)
	}
	return signer, signer.PublicKey()
}

// randomLoopbackIP returns 127.R.x.y with R in [16, 250] and y in [1, 254],
// keeping clear of 127.0.0.1 and the low blocks other tools like to use.
func randomLoopbackIP() string {
	n := func(lo, hi int64) int64 {
		v, err := rand.Int(rand.Reader, big.NewInt(hi-lo+1))
		if err != nil {
			panic(err) // crypto/rand does not fail on Linux
		}
		return lo + v.Int64()
	}
	return fmt.Sprintf("127.%d.%d.%d", n(16, 250), n(0, 255), n(1, 254))
}

// freePort asks the kernel for a free port on ip. The port is released
// before sshd binds it, so a clash is possible and Start retries.
func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, fmt.Errorf("probe free port on %s: %w", ip, err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("close probe listener: %w", err)
	}
	return port, nil
}

// syncBuffer collects sshd's stderr, which exec writes from its own
// goroutine while tests read it.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
