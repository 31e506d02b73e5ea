package testsshd

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// run dials s with cfg and runs cmd, returning its combined output.
func run(t *testing.T, s *Server, cfg *ssh.ClientConfig, cmd string) (string, error) {
	t.Helper()
	cfg.Timeout = 10 * time.Second
	c, err := ssh.Dial("tcp", s.Addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer sess.Close()
	out, err := sess.CombinedOutput(cmd)
	return string(out), err
}

func TestStartKeyLogin(t *testing.T) {
	signer, pub := ClientKey(t)
	s := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{pub}})

	if s.IP == "127.0.0.1" || !strings.HasPrefix(s.IP, "127.") {
		t.Errorf("IP = %q, want a 127.0.0.0/8 address other than 127.0.0.1", s.IP)
	}
	if want := net.JoinHostPort(s.IP, itoa(s.Port)); s.Addr != want {
		t.Errorf("Addr = %q, want %q", s.Addr, want)
	}
	out, err := run(t, s, &ssh.ClientConfig{
		User:            s.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey),
	}, "echo ok")
	if err != nil {
		t.Fatalf("echo ok: %v (output %q)", err, out)
	}
	if out != "ok\n" {
		t.Errorf("echo ok output = %q, want %q", out, "ok\n")
	}
}

// TestSessionsHaveTheirOwnHome: a session's HOME is the server's empty
// Dir/home, so none of the machine user's login files run.
func TestSessionsHaveTheirOwnHome(t *testing.T) {
	signer, pub := ClientKey(t)
	s := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{pub}})
	out, err := run(t, s, &ssh.ClientConfig{
		User:            s.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey),
	}, `printf %s "$HOME"`)
	if err != nil {
		t.Fatalf("print HOME: %v (output %q)", err, out)
	}
	if want := filepath.Join(s.Dir, "home"); out != want {
		t.Errorf("HOME = %q, want %q", out, want)
	}
}

func TestUnknownKeyRejected(t *testing.T) {
	_, pub := ClientKey(t)
	other, _ := ClientKey(t)
	s := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{pub}})

	_, err := run(t, s, &ssh.ClientConfig{
		User:            s.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(other)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey),
	}, "true")
	if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Errorf("login with an unauthorized key: err = %v, want an authentication error", err)
	}
}

func TestKnownHosts(t *testing.T) {
	signer, pub := ClientKey(t)
	s := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{pub}})

	if !strings.HasPrefix(s.KnownHostsLine(), "["+s.IP+"]:"+itoa(s.Port)+" ssh-ed25519 AAAA") {
		t.Errorf("KnownHostsLine() = %q, want [ip]:port ssh-ed25519 …", s.KnownHostsLine())
	}
	cb, err := knownhosts.New(s.WriteKnownHosts(t))
	if err != nil {
		t.Fatalf("knownhosts.New: %v", err)
	}
	if out, err := run(t, s, &ssh.ClientConfig{
		User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: cb,
	}, "echo ok"); err != nil || out != "ok\n" {
		t.Errorf("run with known_hosts = %q, %v; want ok", out, err)
	}

	// The same file must not vouch for another server.
	other := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{pub}, IP: s.IP})
	_, err = run(t, other, &ssh.ClientConfig{
		User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: cb,
	}, "true")
	var keyErr *knownhosts.KeyError
	if !errors.As(err, &keyErr) {
		t.Errorf("dial other server with first server's known_hosts: err = %v, want *knownhosts.KeyError", err)
	}
}

func TestHostCertificate(t *testing.T) {
	signer, pub := ClientKey(t)
	s := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{pub}, HostCertificate: true})
	if s.HostCA == nil {
		t.Fatal("HostCA = nil with HostCertificate set")
	}
	path := t.TempDir() + "/known_hosts"
	if err := os.WriteFile(path, []byte(s.CertAuthorityLine()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cb, err := knownhosts.New(path)
	if err != nil {
		t.Fatalf("knownhosts.New(%q): %v", s.CertAuthorityLine(), err)
	}
	var got ssh.PublicKey
	out, err := run(t, s, &ssh.ClientConfig{
		User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			got = key
			return cb(host, remote, key)
		},
		// Ask for the certificate first, as a known_hosts-aware client does.
		HostKeyAlgorithms: []string{ssh.CertAlgoED25519v01},
	}, "echo ok")
	if err != nil || out != "ok\n" {
		t.Fatalf("run with @cert-authority = %q, %v; want ok", out, err)
	}
	if _, ok := got.(*ssh.Certificate); !ok {
		t.Errorf("server presented %T, want *ssh.Certificate", got)
	}
}

func TestTrustedUserCA(t *testing.T) {
	ca, caPub := ClientKey(t)
	userKey, _ := ClientKey(t)
	s := Start(t, Options{TrustedUserCA: caPub})

	cert := &ssh.Certificate{
		Key: userKey.PublicKey(), CertType: ssh.UserCert, KeyId: "test",
		ValidPrincipals: []string{s.User}, ValidBefore: ssh.CertTimeInfinity,
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	certSigner, err := ssh.NewCertSigner(cert, userKey)
	if err != nil {
		t.Fatal(err)
	}
	out, err := run(t, s, &ssh.ClientConfig{
		User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(certSigner)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey),
	}, "echo ok")
	if err != nil || out != "ok\n" {
		t.Errorf("login with a user certificate = %q, %v; want ok", out, err)
	}
}

// TestLogAndKeyFile logs in with a key read back from ClientKeyFile and
// finds the login in Log at LogLevel INFO.
func TestLogAndKeyFile(t *testing.T) {
	signer, path := ClientKeyFile(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", fi.Mode(), err)
	}
	fromFile, err := ssh.ParsePrivateKey(data)
	if err != nil || !bytes.Equal(fromFile.PublicKey().Marshal(), signer.PublicKey().Marshal()) {
		t.Fatalf("key file does not hold the signer's key: %v", err)
	}
	s := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}, ExtraConfig: []string{"LogLevel INFO"}})
	if _, err := run(t, s, &ssh.ClientConfig{
		User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(fromFile)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey),
	}, "true"); err != nil {
		t.Fatal(err)
	}
	want := "Accepted publickey for " + s.User
	for range 100 {
		if strings.Contains(s.Log(), want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("Log has no %q:\n%s", want, s.Log())
}

func TestExtraConfigOverridesDefaults(t *testing.T) {
	signer, pub := ClientKey(t)
	// The default allows sessions; the extra line must win.
	s := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{pub}, ExtraConfig: []string{"MaxSessions 0"}})
	_, err := run(t, s, &ssh.ClientConfig{
		User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey),
	}, "true")
	if err == nil {
		t.Error("session opened with MaxSessions 0 in ExtraConfig; extra config did not take precedence")
	}
}

func TestExtraConfigReplacesSFTPSubsystem(t *testing.T) {
	signer, pub := ClientKey(t)
	root := t.TempDir()
	s := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{pub}, ExtraConfig: []string{"Subsystem sftp internal-sftp -d " + root}})
	c, err := ssh.Dial("tcp", s.Addr, &ssh.ClientConfig{
		User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey), Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if wd, err := sc.RealPath("."); err != nil || wd != root {
		t.Errorf("SFTP working directory = %q, %v; want %q", wd, err, root)
	}
}

func TestKillDropsSessions(t *testing.T) {
	signer, pub := ClientKey(t)
	s := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{pub}})
	c, err := ssh.Dial("tcp", s.Addr, &ssh.ClientConfig{
		User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey), Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	sess.Stdout = &out
	if err := sess.Start("echo started; sleep 30"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "started") })

	s.Kill()
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("session ended cleanly after Kill, want a dropped connection")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("session still running 10s after Kill")
	}
	if _, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		t.Error("port still accepts connections after Kill")
	}
	s.Kill() // idempotent
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("condition not met within 10s")
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestChosenPortOutsideEphemeralRange: Start picks the port itself, from
// a range the kernel never hands out for port 0, rather than probing a
// kernel-chosen port and hoping it is still free when sshd binds it.
func TestChosenPortOutsideEphemeralRange(t *testing.T) {
	for range 3 {
		s := Start(t, Options{})
		if s.Port < portMin || s.Port > portMax {
			t.Errorf("Port = %d, want one in [%d, %d], below the ephemeral range", s.Port, portMin, portMax)
		}
	}
}

// TestStartRetriesAddressInUse: when sshd finds the address Start chose
// taken, Start tries another one.
func TestStartRetriesAddressInUse(t *testing.T) {
	ip := randomLoopbackIP()
	taken, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port

	orig := choosePort
	t.Cleanup(func() { choosePort = orig })
	calls := 0
	choosePort = func() int {
		calls++
		if calls == 1 {
			return takenPort
		}
		return orig()
	}
	signer, pub := ClientKey(t)
	s := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{pub}, IP: ip})
	if calls != 2 {
		t.Errorf("%d ports chosen, want 2 (the taken one, then a free one)", calls)
	}
	if s.IP != ip || s.Port == takenPort {
		t.Errorf("server on %s, want %s on a port other than the taken %d", s.Addr, ip, takenPort)
	}
	if out, err := run(t, s, &ssh.ClientConfig{
		User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: ssh.FixedHostKey(s.HostKey),
	}, "echo ok"); err != nil || out != "ok\n" {
		t.Errorf("run after a retried start = %q, %v; want ok", out, err)
	}
}

// TestFixedAddressInUse: an address the caller fixed is tried once, and
// the error says why sshd did not start.
func TestFixedAddressInUse(t *testing.T) {
	ip := randomLoopbackIP()
	taken, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = start(t, Options{IP: ip, Port: taken.Addr().(*net.TCPAddr).Port})
	if !errors.Is(err, errAddrInUse) || !strings.Contains(err.Error(), "attempt 1 of") || !strings.Contains(err.Error(), "Address already in use") {
		t.Errorf("start on a taken ip:port = %v, want address in use after one attempt, with sshd's message", err)
	}
}

func TestFixedPort(t *testing.T) {
	signer, pub := ClientKey(t)
	first := Start(t, Options{})
	// No wildcard listener holds first.Port, or first could not have bound
	// it: the same port on another address is free.
	s := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{pub}, Port: first.Port})
	if s.Port != first.Port || s.IP == first.IP {
		t.Errorf("server on %s, want port %d on another IP than %s", s.Addr, first.Port, first.IP)
	}
	if out, err := run(t, s, &ssh.ClientConfig{
		User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: ssh.FixedHostKey(s.HostKey),
	}, "echo ok"); err != nil || out != "ok\n" {
		t.Errorf("run on a fixed port = %q, %v; want ok", out, err)
	}
}

func TestBadPort(t *testing.T) {
	for _, port := range []int{-1, 65536, 1 << 40} {
		if _, err := start(t, Options{Port: port}); err == nil || !strings.Contains(err.Error(), "Options.Port") {
			t.Errorf("start with Port %d = %v, want an error naming Options.Port", port, err)
		}
	}
}

// TestWrapperAndDial: sshd runs under the wrapper (here one that forks it
// as a child, as a shell does), readiness is checked through Dial, and
// Kill still ends sshd.
func TestWrapperAndDial(t *testing.T) {
	dir := t.TempDir()
	marker := dir + "/wrapped"
	wrapper := dir + "/wrapper"
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\necho $$ > "+marker+"\n\"$@\"\necho sshd ended\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int32
	signer, pub := ClientKey(t)
	s := Start(t, Options{
		AuthorizedKeys: []ssh.PublicKey{pub},
		Wrapper:        []string{wrapper},
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
	})
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("wrapper did not run: %v", err)
	}
	if dials.Load() == 0 {
		t.Error("Options.Dial not used to check readiness")
	}
	if out, err := run(t, s, &ssh.ClientConfig{
		User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: ssh.FixedHostKey(s.HostKey),
	}, "echo ok"); err != nil || out != "ok\n" {
		t.Errorf("run through a wrapped sshd = %q, %v; want ok", out, err)
	}
	s.Kill()
	if _, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		t.Error("port still accepts connections after Kill of a wrapped sshd")
	}
}

// TestHostCASigner: the caller's CA signs the host certificate.
func TestHostCASigner(t *testing.T) {
	ca, caPub := ClientKey(t)
	signer, pub := ClientKey(t)
	s := Start(t, Options{AuthorizedKeys: []ssh.PublicKey{pub}, HostCA: ca})
	if s.HostCA == nil || !bytes.Equal(s.HostCA.Marshal(), caPub.Marshal()) {
		t.Fatalf("HostCA = %v, want the caller's CA", s.HostCA)
	}
	checker := &ssh.CertChecker{IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
		return bytes.Equal(auth.Marshal(), caPub.Marshal())
	}}
	out, err := run(t, s, &ssh.ClientConfig{
		User: s.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   checker.CheckHostKey,
		HostKeyAlgorithms: []string{ssh.CertAlgoED25519v01},
	}, "echo ok")
	if err != nil || out != "ok\n" {
		t.Errorf("run trusting the caller's host CA = %q, %v; want ok", out, err)
	}
}

// TestExtraConfigMaxStartups: sshd keeps the last MaxStartups it reads,
// not the first, so the extra line must replace the default one.
func TestExtraConfigMaxStartups(t *testing.T) {
	s := Start(t, Options{ExtraConfig: []string{"MaxStartups 1:100:1"}})
	greets := func() (net.Conn, bool) {
		c, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, len("SSH-2.0-"))
		_, err = io.ReadFull(c, buf)
		return c, err == nil && string(buf) == "SSH-2.0-"
	}
	// The readiness probe's connection may hold the only startup for a
	// moment after Start returns.
	for i := 0; ; i++ {
		held, ok := greets()
		if !ok {
			held.Close()
			if i == 100 {
				t.Fatal("no startup slot within 100 tries")
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		defer held.Close()
		break
	}
	second, ok := greets()
	second.Close()
	if ok {
		t.Error("a second unauthenticated connection got a banner with MaxStartups 1:100:1 in ExtraConfig")
	}
}
