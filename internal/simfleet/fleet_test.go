package simfleet

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"golang.org/x/sync/errgroup"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func clientKey(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startFleet starts n hosts that trust key and closes them at cleanup.
func startFleet(t testing.TB, n int, key ssh.Signer, mod func(*Config)) *Fleet {
	t.Helper()
	cfg := Config{Hosts: n, Dir: t.TempDir(), ClientKeys: []ssh.PublicKey{key.PublicKey()}}
	if mod != nil {
		mod(&cfg)
	}
	f, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return f
}

func dial(t testing.TB, h *Host, auth ssh.AuthMethod) *ssh.Client {
	t.Helper()
	c, err := dialErr(h, auth)
	if err != nil {
		t.Fatalf("dial %s: %v", h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialErr(h *Host, auth ssh.AuthMethod) (*ssh.Client, error) {
	return ssh.Dial("tcp", h.Addr, &ssh.ClientConfig{
		User:            "deploy",
		Auth:            []ssh.AuthMethod{auth},
		HostKeyCallback: ssh.FixedHostKey(h.HostKey),
		Timeout:         10 * time.Second,
	})
}

// run runs cmd in a new session and returns stdout, stderr and Wait's error.
func run(t testing.TB, c *ssh.Client, cmd string) (string, string, error) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	defer s.Close()
	var stdout, stderr bytes.Buffer
	s.Stdout, s.Stderr = &stdout, &stderr
	err = s.Run(cmd)
	return stdout.String(), stderr.String(), err
}

func TestConfigCheckAndSetDefaults(t *testing.T) {
	key := clientKey(t).PublicKey()
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok", Config{Hosts: 1, Dir: "/tmp/x", ClientKeys: []ssh.PublicKey{key}}, ""},
		{"password only", Config{Hosts: 1, Dir: "/tmp/x", Password: "pw"}, ""},
		{"no hosts", Config{Dir: "/tmp/x", ClientKeys: []ssh.PublicKey{key}}, "Hosts = 0"},
		{"no dir", Config{Hosts: 1, ClientKeys: []ssh.PublicKey{key}}, "Dir is required"},
		{"no auth", Config{Hosts: 1, Dir: "/tmp/x"}, "nobody can log in"},
		{"same ports", Config{Hosts: 1, Dir: "/tmp/x", ClientKeys: []ssh.PublicKey{key}, SSHPort: 9000, HealthPort: 9000}, "distinct"},
		{"absolute service path", Config{Hosts: 1, Dir: "/tmp/x", ClientKeys: []ssh.PublicKey{key}, ServicePath: "/srv/app"}, "ServicePath"},
		{"escaping service path", Config{Hosts: 1, Dir: "/tmp/x", ClientKeys: []ssh.PublicKey{key}, ServicePath: "../app"}, "ServicePath"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.CheckAndSetDefaults()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckAndSetDefaults() = %v, want nil", err)
				}
				if tt.cfg.SSHPort != DefaultSSHPort || tt.cfg.HealthPort != DefaultHealthPort ||
					tt.cfg.ServicePath != DefaultServicePath || tt.cfg.NamePrefix != DefaultNamePrefix || tt.cfg.Logger == nil {
					t.Errorf("defaults not set: %+v", tt.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("CheckAndSetDefaults() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestHostsLayout(t *testing.T) {
	key := clientKey(t)
	f := startFleet(t, 3, key, func(c *Config) { c.NamePrefix = "web-" })
	seen := map[string]bool{}
	for i, h := range f.Hosts() {
		if want := fmt.Sprintf("web-%03d", i+1); h.Name != want {
			t.Errorf("host %d name = %q, want %q", i, h.Name, want)
		}
		if !strings.HasPrefix(h.IP, "127.") || h.IP == "127.0.0.1" || seen[h.IP] {
			t.Errorf("host %s IP = %q, want a distinct 127/8 address other than 127.0.0.1", h.Name, h.IP)
		}
		seen[h.IP] = true
		if want := net.JoinHostPort(h.IP, strconv.Itoa(DefaultSSHPort)); h.Addr != want {
			t.Errorf("host %s Addr = %q, want %q", h.Name, h.Addr, want)
		}
		if want := net.JoinHostPort(h.IP, strconv.Itoa(DefaultHealthPort)); h.HealthAddr != want {
			t.Errorf("host %s HealthAddr = %q, want %q", h.Name, h.HealthAddr, want)
		}
		if fi, err := os.Stat(h.Root); err != nil || !fi.IsDir() {
			t.Errorf("host %s Root %q is not a directory: %v", h.Name, h.Root, err)
		}
		if want := filepath.Join(h.Root, "app"); h.ServiceDir() != want {
			t.Errorf("ServiceDir() = %q, want %q", h.ServiceDir(), want)
		}
	}
}

func TestExec(t *testing.T) {
	key := clientKey(t)
	h := startFleet(t, 1, key, nil).Hosts()[0]
	c := dial(t, h, ssh.PublicKeys(key))

	tests := []struct {
		cmd        string
		wantOut    string
		wantErrOut string
		wantStatus int    // -1: success
		wantSignal string // for exit-signal
	}{
		{cmd: "echo hello", wantOut: "hello\n", wantStatus: -1},
		{cmd: "exit 3", wantStatus: 3},
		{cmd: "echo oops >&2; exit 1", wantErrOut: "oops\n", wantStatus: 1},
		{cmd: "pwd -P", wantOut: h.Root + "\n", wantStatus: -1},
		{cmd: `printf '%s %s' "$HOME" "$USER"`, wantOut: h.Root + " deploy", wantStatus: -1},
		{cmd: "kill -KILL $$", wantSignal: "KILL"},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			out, errOut, err := run(t, c, tt.cmd)
			if out != tt.wantOut || errOut != tt.wantErrOut {
				t.Errorf("run(%q) stdout, stderr = %q, %q; want %q, %q", tt.cmd, out, errOut, tt.wantOut, tt.wantErrOut)
			}
			var ee *ssh.ExitError
			switch {
			case tt.wantSignal != "":
				if !errors.As(err, &ee) || ee.Signal() != tt.wantSignal {
					t.Errorf("run(%q) err = %v, want exit signal %s", tt.cmd, err, tt.wantSignal)
				}
			case tt.wantStatus < 0:
				if err != nil {
					t.Errorf("run(%q) err = %v, want nil", tt.cmd, err)
				}
			default:
				if !errors.As(err, &ee) || ee.ExitStatus() != tt.wantStatus {
					t.Errorf("run(%q) err = %v, want exit status %d", tt.cmd, err, tt.wantStatus)
				}
			}
		})
	}
	if got, want := h.Stats().Execs, int64(len(tests)); got != want {
		t.Errorf("Stats().Execs = %d, want %d", got, want)
	}
	if got := h.Stats().Connections; got != 1 {
		t.Errorf("Stats().Connections = %d, want 1", got)
	}
}

func TestExecStdin(t *testing.T) {
	key := clientKey(t)
	h := startFleet(t, 1, key, nil).Hosts()[0]
	c := dial(t, h, ssh.PublicKeys(key))
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Stdin = strings.NewReader("from stdin")
	out, err := s.Output("cat")
	if err != nil || string(out) != "from stdin" {
		t.Errorf("cat with stdin = %q, %v; want %q", out, err, "from stdin")
	}
}

func TestConcurrentSessionsOnOneConnection(t *testing.T) {
	key := clientKey(t)
	h := startFleet(t, 1, key, nil).Hosts()[0]
	c := dial(t, h, ssh.PublicKeys(key))

	// Every session blocks until all of them have started, so they can only
	// finish if the host runs them concurrently.
	const n = 8
	var g errgroup.Group
	for i := range n {
		g.Go(func() error {
			cmd := fmt.Sprintf("touch started.%d; i=0; while [ $(ls started.* | wc -l) -lt %d ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; ls started.* | wc -l", i, n)
			out, _, err := run(t, c, cmd)
			if err != nil {
				return err
			}
			if strings.TrimSpace(out) != strconv.Itoa(n) {
				return fmt.Errorf("session %d saw %q sessions started, want %d", i, strings.TrimSpace(out), n)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Error(err)
	}
}

func TestChannelCloseKillsCommand(t *testing.T) {
	key := clientKey(t)
	h := startFleet(t, 1, key, nil).Hosts()[0]
	c := dial(t, h, ssh.PublicKeys(key))
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	// A child of the shell, to show the whole process group goes.
	if err := s.Start("sleep 300 & echo $! > child.pid; wait"); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(h.Root, "child.pid")
	var pid int
	waitFor(t, "child.pid written", func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil || !bytes.HasSuffix(b, []byte("\n")) {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	if !processAlive(pid) {
		t.Fatalf("child %d not running before close", pid)
	}
	s.Close()
	waitFor(t, "child killed after channel close", func() bool { return !processAlive(pid) })
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || !bytes.HasPrefix(b[i+1:], []byte(" Z"))
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within 10s", what)
}

func TestKeepaliveAnswered(t *testing.T) {
	key := clientKey(t)
	h := startFleet(t, 1, key, nil).Hosts()[0]
	c := dial(t, h, ssh.PublicKeys(key))
	// OpenSSH answers keepalive@openssh.com with a failure; what matters is
	// that there is an answer.
	ok, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
	if err != nil {
		t.Fatalf("keepalive: %v", err)
	}
	if ok {
		t.Errorf("keepalive reply ok = true, want false like OpenSSH")
	}
}

func TestAuth(t *testing.T) {
	key, other := clientKey(t), clientKey(t)
	f := startFleet(t, 1, key, func(c *Config) { c.Password = "s3cret" })
	h := f.Hosts()[0]
	tests := []struct {
		name string
		auth ssh.AuthMethod
		ok   bool
	}{
		{"client key", ssh.PublicKeys(key), true},
		{"unknown key", ssh.PublicKeys(other), false},
		{"password", ssh.Password("s3cret"), true},
		{"wrong password", ssh.Password("guess"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dialErr(h, tt.auth)
			if err == nil {
				c.Close()
			}
			if (err == nil) != tt.ok {
				t.Errorf("dial with %s: err = %v, want ok=%v", tt.name, err, tt.ok)
			}
		})
	}
	// The server counts a connection just after the client sees success.
	waitFor(t, "2 connections counted", func() bool { return h.Stats().Connections >= 2 })
	if got := h.Stats().Connections; got != 2 {
		t.Errorf("Stats().Connections = %d, want 2 (authenticated only)", got)
	}
}

func TestKnownHosts(t *testing.T) {
	key := clientKey(t)
	f := startFleet(t, 3, key, nil)
	path := filepath.Join(t.TempDir(), "known_hosts")
	if err := f.WriteKnownHosts(path); err != nil {
		t.Fatal(err)
	}
	cb, err := knownhosts.New(path)
	if err != nil {
		t.Fatalf("knownhosts.New: %v", err)
	}
	if lines := strings.Count(string(f.KnownHosts()), "\n"); lines != 3 {
		t.Errorf("KnownHosts has %d lines, want 3", lines)
	}
	for _, h := range f.Hosts() {
		if !strings.HasPrefix(h.KnownHostsLine(), "["+h.IP+"]:2222 ssh-ed25519 ") {
			t.Errorf("KnownHostsLine() = %q", h.KnownHostsLine())
		}
		c, err := ssh.Dial("tcp", h.Addr, &ssh.ClientConfig{
			User: "deploy", Auth: []ssh.AuthMethod{ssh.PublicKeys(key)}, HostKeyCallback: cb, Timeout: 10 * time.Second,
		})
		if err != nil {
			t.Errorf("dial %s with known_hosts: %v", h.Name, err)
			continue
		}
		c.Close()
	}
	// Each host has its own key.
	hs := f.Hosts()
	if bytes.Equal(hs[0].HostKey.Marshal(), hs[1].HostKey.Marshal()) {
		t.Error("two hosts share a host key")
	}
}

func upload(c *ssh.Client, path string, data []byte) error {
	sc, err := sftp.NewClient(c)
	if err != nil {
		return fmt.Errorf("sftp client: %w", err)
	}
	defer sc.Close()
	if err := sc.MkdirAll(filepath.Dir(path)); err != nil {
		return fmt.Errorf("mkdir: %w", err)
	}
	fh, err := sc.Create(path)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	if _, err := fh.ReadFrom(bytes.NewReader(data)); err != nil {
		fh.Close()
		return fmt.Errorf("write: %w", err)
	}
	return fh.Close()
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func TestSFTPUploadLandsUnderRoot(t *testing.T) {
	key := clientKey(t)
	h := startFleet(t, 1, key, nil).Hosts()[0]
	c := dial(t, h, ssh.PublicKeys(key))

	data := payload(300 << 10) // several write packets
	if err := upload(c, "app/releases/r1.partial", data); err != nil {
		t.Fatalf("upload: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(h.Root, "app/releases/r1.partial"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("uploaded file: %d bytes, err %v; want the %d bytes sent", len(got), err, len(data))
	}

	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if wd, err := sc.Getwd(); err != nil || wd != h.Root {
		t.Errorf("Getwd() = %q, %v; want %q", wd, err, h.Root)
	}
	if err := sc.PosixRename("app/releases/r1.partial", "app/releases/r1"); err != nil {
		t.Errorf("PosixRename: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.Root, "app/releases/r1")); err != nil {
		t.Errorf("renamed file: %v", err)
	}

	st := h.Stats()
	if st.SFTPBytes != int64(len(data)) {
		t.Errorf("Stats().SFTPBytes = %d, want %d", st.SFTPBytes, len(data))
	}
	if st.SFTPWrites < 2 {
		t.Errorf("Stats().SFTPWrites = %d, want several", st.SFTPWrites)
	}
}

func TestFaultCorruptUploads(t *testing.T) {
	key := clientKey(t)
	h := startFleet(t, 1, key, nil).Hosts()[0]
	c := dial(t, h, ssh.PublicKeys(key))
	data := payload(100 << 10)

	h.SetFaults(Faults{CorruptUploads: true})
	if err := upload(c, "bad", data); err != nil {
		t.Fatalf("upload: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(h.Root, "bad"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(data) {
		t.Fatalf("corrupted upload has %d bytes, want %d", len(got), len(data))
	}
	diff := 0
	for i := range got {
		if got[i] != data[i] {
			diff++
		}
	}
	if diff != 1 {
		t.Errorf("corrupted upload differs in %d bytes, want 1", diff)
	}

	h.SetFaults(Faults{})
	if err := upload(c, "good", data); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(h.Root, "good")); !bytes.Equal(got, data) {
		t.Error("upload after clearing the fault is not intact")
	}
}

func TestFaultKillAfterUploadBytes(t *testing.T) {
	key := clientKey(t)
	h := startFleet(t, 1, key, nil).Hosts()[0]
	const limit = 64 << 10
	h.SetFaults(Faults{KillAfterUploadBytes: limit})

	c, err := dialErr(h, ssh.PublicKeys(key))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = upload(c, "cut", payload(1<<20))
	if err == nil {
		t.Fatal("upload of 1 MiB succeeded with KillAfterUploadBytes = 64 KiB")
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("SSH connection still open after the upload fault")
	}
	if fi, err := os.Stat(filepath.Join(h.Root, "cut")); err == nil && fi.Size() > limit {
		t.Errorf("%d bytes reached disk, want at most %d", fi.Size(), limit)
	}

	h.SetFaults(Faults{})
	c2 := dial(t, h, ssh.PublicKeys(key))
	if err := upload(c2, "cut", payload(1<<20)); err != nil {
		t.Errorf("upload after clearing the fault: %v", err)
	}
}

func TestFaultRefuseConnections(t *testing.T) {
	key := clientKey(t)
	h := startFleet(t, 1, key, nil).Hosts()[0]
	h.SetFaults(Faults{RefuseConnections: true})
	if c, err := dialErr(h, ssh.PublicKeys(key)); err == nil {
		c.Close()
		t.Fatal("dial succeeded with RefuseConnections")
	}
	h.SetFaults(Faults{})
	dial(t, h, ssh.PublicKeys(key)).Close()
	waitFor(t, "connection counted", func() bool { return h.Stats().Connections >= 1 })
	if got := h.Stats().Connections; got != 1 {
		t.Errorf("Stats().Connections = %d, want 1", got)
	}
}

func TestFaultExecDelay(t *testing.T) {
	key := clientKey(t)
	h := startFleet(t, 1, key, nil).Hosts()[0]
	c := dial(t, h, ssh.PublicKeys(key))

	const delay = 150 * time.Millisecond
	h.SetFaults(Faults{ExecDelay: delay})
	start := time.Now()
	if out, _, err := run(t, c, "echo ok"); err != nil || out != "ok\n" {
		t.Fatalf("echo ok = %q, %v", out, err)
	}
	// A lower bound only: it cannot be met early, whatever the load.
	if took := time.Since(start); took < delay {
		t.Errorf("exec took %v, want at least the %v delay", took, delay)
	}

	// Closing the session during the delay must cancel the command.
	h.SetFaults(Faults{ExecDelay: time.Hour})
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("touch ran"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	h.SetFaults(Faults{})
	// A later command on the same connection still runs, and the delayed
	// one never did.
	if out, _, err := run(t, c, "test -e ran && echo ran || echo not"); err != nil || out != "not\n" {
		t.Errorf("after canceled delayed exec: %q, %v; want not", out, err)
	}
}

func TestHealthContract(t *testing.T) {
	key := clientKey(t)
	h := startFleet(t, 1, key, nil).Hosts()[0]
	c := dial(t, h, ssh.PublicKeys(key))
	relDir := t.TempDir()

	health := func() int {
		t.Helper()
		resp, err := http.Get("http://" + h.HealthAddr + "/health")
		if err != nil {
			t.Fatalf("GET /health: %v", err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	deploy := func(version string, healthy bool) {
		t.Helper()
		rel, err := BuildRelease(relDir, version, healthy)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(rel.Path)
		if err != nil {
			t.Fatal(err)
		}
		dir := "app/releases/" + version
		if err := upload(c, dir+".tar.gz", data); err != nil {
			t.Fatal(err)
		}
		cmd := "mkdir -p " + dir + " && tar -xzf " + dir + ".tar.gz -C " + dir + " && cd " + dir + " && sh bin/start"
		if out, errOut, err := run(t, c, cmd); err != nil {
			t.Fatalf("unpack and start %s: %v\n%s%s", version, err, out, errOut)
		}
	}
	stop := func(version string) {
		t.Helper()
		if _, errOut, err := run(t, c, "cd app/releases/"+version+" && sh bin/stop"); err != nil {
			t.Fatalf("stop %s: %v %s", version, err, errOut)
		}
	}

	if got := health(); got != http.StatusServiceUnavailable {
		t.Errorf("health before any release = %d, want 503", got)
	}
	deploy("1.0.0", true)
	if got := health(); got != http.StatusOK {
		t.Errorf("health with healthy release running = %d, want 200", got)
	}
	running, _ := os.ReadFile(filepath.Join(h.ServiceDir(), ".svc/running"))
	if want := filepath.Join(h.ServiceDir(), "releases/1.0.0") + "\n"; string(running) != want {
		t.Errorf(".svc/running = %q, want %q", running, want)
	}
	stop("1.0.0")
	if got := health(); got != http.StatusServiceUnavailable {
		t.Errorf("health after stop = %d, want 503", got)
	}
	stop("1.0.0") // stopping twice is not an error
	deploy("1.1.0", false)
	if got := health(); got != http.StatusServiceUnavailable {
		t.Errorf("health with broken release running = %d, want 503", got)
	}
}

func TestBuildRelease(t *testing.T) {
	dir := t.TempDir()
	a, err := BuildRelease(dir, "2.0.1", true)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(a.Path)
	if err != nil || fi.Size() != a.Size || a.Version != "2.0.1" || len(a.SHA256) != 64 {
		t.Errorf("BuildRelease = %+v (stat %v, %v)", a, fi, err)
	}
	// Deterministic: rebuilding gives the same digest.
	b, err := BuildRelease(t.TempDir(), "2.0.1", true)
	if err != nil || b.SHA256 != a.SHA256 {
		t.Errorf("rebuild digest = %s, %v; want %s", b.SHA256, err, a.SHA256)
	}
	broken, err := BuildRelease(dir, "2.0.1", false)
	if err != nil || broken.SHA256 == a.SHA256 || broken.Path == a.Path {
		t.Errorf("broken release = %+v, %v; want a different file", broken, err)
	}
	for _, v := range []string{"", "../x", "a b", "v1;rm"} {
		if _, err := BuildRelease(dir, v, true); err == nil {
			t.Errorf("BuildRelease(version %q) succeeded, want an error", v)
		}
	}
}

func TestHealthHandler(t *testing.T) {
	deploy := t.TempDir()
	healthy := filepath.Join(deploy, "releases", "a")
	broken := filepath.Join(deploy, "releases", "b")
	for _, d := range []string{healthy, broken, filepath.Join(deploy, ".svc")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(healthy, "HEALTHY"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		running *string
		path    string
		want    int
	}{
		{"no running file", nil, "/health", 503},
		{"healthy", ptr(healthy + "\n"), "/health", 200},
		{"broken", ptr(broken + "\n"), "/health", 503},
		{"missing dir", ptr(filepath.Join(deploy, "releases/gone")), "/health", 503},
		{"empty", ptr(""), "/health", 503},
		{"relative", ptr("releases/a"), "/health", 503},
		{"other path", ptr(healthy), "/other", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runningPath := filepath.Join(deploy, ".svc", "running")
			_ = os.Remove(runningPath)
			if tt.running != nil {
				if err := os.WriteFile(runningPath, []byte(*tt.running), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			rec := &recorder{header: http.Header{}}
			req, _ := http.NewRequest("GET", tt.path, nil)
			HealthHandler(deploy).ServeHTTP(rec, req)
			if rec.code != tt.want {
				t.Errorf("GET %s = %d, want %d", tt.path, rec.code, tt.want)
			}
		})
	}
}

func ptr(s string) *string { return &s }

// recorder is a minimal http.ResponseWriter.
type recorder struct {
	header http.Header
	code   int
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = 200
	}
	return len(b), nil
}
func (r *recorder) WriteHeader(code int) { r.code = code }

func TestManyHosts(t *testing.T) {
	key := clientKey(t)
	before := runtime.NumGoroutine()
	f := startFleet(t, 200, key, nil)
	// Scale depends on idle hosts costing only their two listeners.
	if extra := runtime.NumGoroutine() - before; extra > 2*200+10 {
		t.Errorf("200 idle hosts run %d goroutines, want at most %d", extra, 2*200+10)
	}
	var g errgroup.Group
	g.SetLimit(8)
	var mu sync.Mutex
	answered := 0
	for _, h := range f.Hosts() {
		g.Go(func() error {
			c, err := dialErr(h, ssh.PublicKeys(key))
			if err != nil {
				return fmt.Errorf("dial %s: %w", h.Name, err)
			}
			defer c.Close()
			s, err := c.NewSession()
			if err != nil {
				return err
			}
			defer s.Close()
			out, err := s.Output("echo " + h.Name)
			if err != nil || string(out) != h.Name+"\n" {
				return fmt.Errorf("%s: echo = %q, %v", h.Name, out, err)
			}
			mu.Lock()
			answered++
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if answered != 200 {
		t.Errorf("%d hosts answered, want 200", answered)
	}
}

func TestCloseCutsConnections(t *testing.T) {
	key := clientKey(t)
	f, err := Start(context.Background(), Config{Hosts: 2, Dir: t.TempDir(), ClientKeys: []ssh.PublicKey{key.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	h := f.Hosts()[0]
	c := dial(t, h, ssh.PublicKeys(key))
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("sleep 300"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Wait(); err == nil {
		t.Error("session ended cleanly after Close, want it cut")
	}
	if _, err := net.DialTimeout("tcp", h.Addr, time.Second); err == nil {
		t.Error("SSH port still accepts after Close")
	}
	if _, err := net.DialTimeout("tcp", h.HealthAddr, time.Second); err == nil {
		t.Error("health port still accepts after Close")
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestStartCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Start(ctx, Config{Hosts: 2, Dir: t.TempDir(), Password: "x"})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Start with canceled ctx = %v, want context.Canceled", err)
	}
}

// BenchmarkStart measures starting and closing a 1,000-host fleet.
func BenchmarkStart(b *testing.B) {
	key := clientKey(b)
	for b.Loop() {
		f, err := Start(context.Background(), Config{Hosts: 1000, Dir: b.TempDir(), ClientKeys: []ssh.PublicKey{key.PublicKey()}})
		if err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
