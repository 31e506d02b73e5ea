package testsshd

import (
	"bufio"
	"bytes"
	"context"
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
	"slices"
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
	// startAttempts bounds the addresses Start tries when sshd finds the
	// one it was given already in use.
	startAttempts = 8
	// readyTimeout bounds how long one attempt waits for the SSH banner.
	readyTimeout = 10 * time.Second
)

// sshd needs its port written in its config: it cannot be handed a
// listening socket, and probing for a free port, closing the probe and
// hoping sshd binds it first is a race with every other test process.
// Instead a port is drawn at random from [portMin, portMax], below
// Linux's default ephemeral range (net.ipv4.ip_local_port_range,
// 32768-60999), so with that range it never meets a port the kernel hands
// out for a :0 listener or an outgoing connection; on a random 127.R.x.y
// address a clash with another test's sshd is then very rare. When one
// happens sshd says "Address already in use" and exits, and Start tries a
// new address, at most startAttempts times; any other failure is reported
// at once.
const (
	portMin = 20000
	portMax = 32767
)

// choosePort picks the port of one attempt; tests replace it to force a
// clash.
var choosePort = func() int { return int(randInt(portMin, portMax)) }

// errAddrInUse is returned by run when sshd could not bind its address.
var errAddrInUse = errors.New("address already in use")

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
	// HostCA, if set, signs the host certificate instead of a fresh CA; it
	// implies HostCertificate.
	HostCA ssh.Signer
	// ExtraConfig holds sshd_config lines. A line replaces the default of
	// its keyword (sshd keeps the first value of most keywords but the
	// last of some, such as MaxStartups); "Subsystem sftp ..." replaces the
	// default sftp subsystem (sshd refuses one defined twice), for example
	// to start SFTP sessions in another directory with "internal-sftp -d
	// DIR". A "Match" line and everything after it go at the end of the
	// file, where Match belongs. By default sessions get HOME=Dir/home, an
	// empty directory, so no login file of the machine's user runs;
	// "SetEnv ..." replaces that.
	ExtraConfig []string
	// IP is the address to listen on; empty allocates a random 127.R.x.y
	// address. With Wrapper and Dial it may be an address that exists only
	// inside another network namespace.
	IP string
	// Port is the port to listen on; 0 picks one (see portMin). With both
	// IP and Port fixed, sshd is started once: an address in use is then
	// an error.
	Port int
	// Wrapper, if set, is the start of sshd's command line, for example
	// {"ip", "netns", "exec", NS} to run sshd in another network namespace.
	// The wrapper must run sshd as its child or exec it: Kill ends the
	// wrapper's whole process tree.
	Wrapper []string
	// Dial, if set, opens the connections that check sshd is ready, for a
	// server that cannot be reached from the test's own network namespace.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
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
	s, err := start(tb, opts)
	if err != nil {
		tb.Fatalf("testsshd: %v", err)
	}
	return s
}

// start is Start returning its error; tb only provides the directory and
// the cleanup.
func start(tb testing.TB, opts Options) (*Server, error) {
	if _, err := os.Stat(SSHDPath); err != nil {
		return nil, fmt.Errorf("%s not found (install openssh-server; make test does it): %w", SSHDPath, err)
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("Options.Port %d out of range [0, 65535]", opts.Port)
	}
	if err := os.MkdirAll(privSepDir, 0o755); err != nil {
		return nil, fmt.Errorf("create privilege separation dir %s (run as root?): %w", privSepDir, err)
	}
	u, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("current user: %w", err)
	}

	dir := tb.TempDir()
	s := &Server{User: u.Username, Dir: dir}
	hostKeyPath, err := s.writeKeys(dir, opts)
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(dir, "home"), 0o700); err != nil {
		return nil, fmt.Errorf("create the sessions' home: %w", err)
	}

	for attempt := 1; ; attempt++ {
		ip, port := opts.IP, opts.Port
		if ip == "" {
			ip = randomLoopbackIP()
		}
		if port == 0 {
			port = choosePort()
		}
		cfgPath := filepath.Join(dir, "sshd_config")
		cfg := config(net.JoinHostPort(ip, strconv.Itoa(port)), hostKeyPath, dir, opts)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			return nil, fmt.Errorf("write config: %w", err)
		}
		if opts.HostCertificate || opts.HostCA != nil {
			if err := s.writeHostCert(dir, ip, opts.HostCA); err != nil {
				return nil, err
			}
		}
		err := s.run(cfgPath, ip, port, opts)
		if err == nil {
			tb.Cleanup(func() {
				s.Kill()
				if tb.Failed() {
					tb.Logf("testsshd %s stderr:\n%s", s.Addr, s.stderr.String())
				}
			})
			return s, nil
		}
		// Only a clash on an address Start chose itself is worth another
		// try; the caller's own address would clash again.
		chosen := opts.IP == "" || opts.Port == 0
		if !errors.Is(err, errAddrInUse) || !chosen || attempt == startAttempts {
			return nil, fmt.Errorf("sshd did not start (attempt %d of at most %d): %w", attempt, startAttempts, err)
		}
	}
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

// writeHostCert signs the host key for ip with caSigner, or a fresh CA when
// it is nil. It runs once the IP is known because the certificate's
// principal is the IP.
func (s *Server) writeHostCert(dir, ip string, caSigner ssh.Signer) error {
	if caSigner == nil {
		_, caPriv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return fmt.Errorf("generate host CA: %w", err)
		}
		if caSigner, err = ssh.NewSignerFromKey(caPriv); err != nil {
			return fmt.Errorf("host CA signer: %w", err)
		}
	}
	s.HostCA = caSigner.PublicKey()
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

// config renders sshd_config. Extra lines come first and the defaults of
// the keywords they set are left out, because sshd keeps the first value
// of most keywords and the last of a few; Match blocks must come last.
func config(listen, hostKeyPath, dir string, opts Options) string {
	var head, match []string
	set := map[string]bool{} // keywords of head, by configKey
	for i, line := range opts.ExtraConfig {
		f := strings.Fields(line)
		if len(f) > 0 && strings.EqualFold(f[0], "Match") {
			match = opts.ExtraConfig[i:]
			break
		}
		if len(f) > 0 {
			set[configKey(f)] = true
		}
		head = append(head, line)
	}
	lines := append([]string{}, head...)
	lines = append(lines,
		"ListenAddress "+listen,
		"HostKey "+hostKeyPath,
	)
	if opts.HostCertificate || opts.HostCA != nil {
		lines = append(lines, "HostCertificate "+hostKeyPath+"-cert.pub")
	}
	if opts.TrustedUserCA != nil {
		lines = append(lines, "TrustedUserCAKeys "+filepath.Join(dir, "trusted_user_ca"))
	}
	for _, d := range []string{
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"PidFile none",
		"StrictModes no",
		"UsePAM no",
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"Subsystem sftp internal-sftp",
		"MaxStartups 100:30:200",
		"MaxSessions 64",
		"LogLevel ERROR",
		// Sessions run as the test's own user, whose login files are
		// this machine's, not the test's: a .bashrc that initialises a
		// language toolchain can take seconds per command (a minute when
		// its lock is stale). An empty home of the server's own keeps
		// every SSH command to what the test sent.
		"SetEnv HOME=" + filepath.Join(dir, "home"),
	} {
		if !set[configKey(strings.Fields(d))] {
			lines = append(lines, d)
		}
	}
	lines = append(lines, match...)
	return strings.Join(lines, "\n") + "\n"
}

// configKey names what an sshd_config line sets: its keyword, in lower
// case as sshd compares them, and for Subsystem the subsystem's name.
func configKey(fields []string) string {
	k := strings.ToLower(fields[0])
	if k == "subsystem" && len(fields) > 1 {
		k += " " + fields[1]
	}
	return k
}

// run starts sshd with cfgPath and waits for its banner on ip:port. On
// error the process is gone; the error wraps errAddrInUse when sshd could
// not bind ip:port because something else has it.
func (s *Server) run(cfgPath, ip string, port int, opts Options) error {
	stderr := &syncBuffer{}
	argv := append(slices.Clone(opts.Wrapper), SSHDPath, "-D", "-e", "-f", cfgPath)
	cmd := exec.Command(argv[0], argv[1:]...)
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
	dial := opts.Dial
	if dial == nil {
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}
	}
	if err := waitBanner(addr, dial, exited); err != nil {
		killTree(cmd.Process.Pid)
		<-exited
		// sshd logs "Bind to port P on IP failed: Address already in use."
		// and exits: the stderr is complete once Wait has returned.
		if errors.Is(err, errExited) && strings.Contains(stderr.String(), "Address already in use") {
			err = fmt.Errorf("%w: %w", errAddrInUse, err)
		}
		return fmt.Errorf("%s on %s: %w; stderr:\n%s", SSHDPath, addr, err, stderr.String())
	}
	s.Addr, s.IP, s.Port = addr, ip, port
	s.cmd, s.stderr, s.exited = cmd, stderr, exited
	return nil
}

// errExited is waitBanner's error when sshd ended before it was ready.
var errExited = errors.New("sshd exited")

// waitBanner polls addr until it completes an SSH identification line, the
// process exits, or readyTimeout passes.
func waitBanner(addr string, dial func(context.Context, string) (net.Conn, error), exited <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errExited
		default:
		}
		if lastErr = readBanner(addr, dial); lastErr == nil {
			return nil
		}
		select {
		case <-exited:
			return errExited
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("no SSH banner within %v: %w", readyTimeout, lastErr)
}

func readBanner(addr string, dial func(context.Context, string) (net.Conn, error)) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := dial(ctx, addr)
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

// Log returns what sshd has logged so far (it runs with -e, logging to
// stderr); the default LogLevel is ERROR, so a test that reads logins sets
// "LogLevel INFO" or "LogLevel VERBOSE" in Options.ExtraConfig.
func (s *Server) Log() string { return s.stderr.String() }

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

// ClientKeyFile returns a fresh ed25519 key and the path of its private
// key file (OpenSSH form, mode 0600) in a temporary directory, for
// daemons that read keys from files (a gateway's --ssh-key or
// --ssh-ca-key).
func ClientKeyFile(tb testing.TB) (ssh.Signer, string) {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatalf("testsshd: generate key: %v", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		tb.Fatalf("testsshd: signer: %v", err)
	}
	path := filepath.Join(tb.TempDir(), "id_ed25519")
	if err := writePrivateKey(path, priv); err != nil {
		tb.Fatalf("testsshd: %v", err)
	}
	return signer, path
}

// randomLoopbackIP returns 127.R.x.y with R in [16, 250] and y in [1, 254],
// keeping clear of 127.0.0.1 and the low blocks other tools like to use.
func randomLoopbackIP() string {
	return fmt.Sprintf("127.%d.%d.%d", randInt(16, 250), randInt(0, 255), randInt(1, 254))
}

// randInt returns a uniform random integer in [lo, hi].
func randInt(lo, hi int64) int64 {
	v, err := rand.Int(rand.Reader, big.NewInt(hi-lo+1))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return lo + v.Int64()
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
