package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// syncBuffer is a bytes.Buffer safe for a daemon's logging goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls until buf contains want, for at most d.
func (s *syncBuffer) waitFor(t *testing.T, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(s.String(), want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %q within %v; output so far:\n%s", want, d, s.String())
}

// daemon runs a long-running verb in the background until stop is called,
// which cancels it and returns its exit code.
type daemon struct {
	out, err *syncBuffer
	cancel   context.CancelFunc
	done     chan int
}

func startDaemon(t *testing.T, env map[string]string, args ...string) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{out: &syncBuffer{}, err: &syncBuffer{}, cancel: cancel, done: make(chan int, 1)}
	go func() {
		d.done <- Run(ctx, args, &Env{Stdin: strings.NewReader(""), Stdout: d.out, Stderr: d.err, Getenv: func(k string) string { return env[k] }})
	}()
	t.Cleanup(func() { d.stop(t) })
	return d
}

// stop cancels the daemon (as SIGINT does) and returns its exit code.
func (d *daemon) stop(t *testing.T) int {
	t.Helper()
	d.cancel()
	select {
	case code := <-d.done:
		d.done <- code // later calls see it too
		return code
	case <-time.After(60 * time.Second):
		t.Fatalf("daemon did not stop within 60s; stderr:\n%s", d.err.String())
		return -1
	}
}

// writeKey writes a fresh unencrypted ed25519 private key in OpenSSH format.
func writeKey(t *testing.T, dir string) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDaemonUsage(t *testing.T) {
	tests := []struct {
		args   []string
		stderr string
	}{
		{[]string{"gateway", "--ssh-key", "k", "--credential-file", "/nonexistent/gateway.pem"}, "give --join-token-file or --join-token"},
		{[]string{"gateway", "--datacenter", "dc-1"}, "no SSH credentials"},
		{[]string{"gateway", "--datacenter", "dc-1", "--ssh-agent", "--join-token", "t", "--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"gateway", "--datacenter", "dc-1", "--ssh-agent", "--join-token", "t", "--otel-endpoint", "nohost"}, "--otel-endpoint"},
		{[]string{"controlplane", "extra"}, "takes no arguments"},
		{[]string{"controlplane", "--log-format", "xml"}, `--log-format "xml"`},
	}
	for _, tt := range tests {
		code, _, errOut := runCLI(t, nil, tt.args...)
		if code != 2 || !strings.Contains(errOut, tt.stderr) {
			t.Errorf("outpost %q: exit %d, stderr %q; want exit 2 and %q", tt.args, code, errOut, tt.stderr)
		}
	}
}

func TestStringList(t *testing.T) {
	var l stringList
	for _, v := range []string{"a:1,b:2", " c:3 ", ""} {
		l.Set(v)
	}
	if got := l.String(); got != "a:1,b:2,c:3" {
		t.Errorf("stringList = %q, want a:1,b:2,c:3", got)
	}
}

// fakeServer is a runningServer whose failure the test decides.
type fakeServer struct {
	done      chan struct{}
	err       error
	shutdowns int
}

func (f *fakeServer) Done() <-chan struct{} { return f.done }
func (f *fakeServer) Err() error            { return f.err }
func (f *fakeServer) Shutdown(context.Context) error {
	f.shutdowns++
	return nil
}

func TestServeUntil(t *testing.T) {
	// The server fails by itself: shut down, and the failure is the error.
	failed := &fakeServer{done: make(chan struct{}), err: errors.New("controlplane: state store: embedded etcd server stopped")}
	close(failed.done)
	err := serveUntil(context.Background(), failed)
	if err == nil || !strings.Contains(err.Error(), "embedded etcd server stopped") || failed.shutdowns != 1 {
		t.Errorf("serveUntil(failed server) = %v after %d Shutdowns, want its failure after 1", err, failed.shutdowns)
	}
	// The server logged the failure: the command line does not print it again.
	if ee := (*exitError)(nil); !errors.As(err, &ee) || !ee.logged || ee.code != 1 {
		t.Errorf("serveUntil(failed server) = %#v, want an exitError, code 1, marked as logged", err)
	}
	// An interrupt: shut down, no error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	healthy := &fakeServer{done: make(chan struct{})}
	if err := serveUntil(ctx, healthy); err != nil || healthy.shutdowns != 1 {
		t.Errorf("serveUntil(interrupted) = %v after %d Shutdowns, want nil after 1", err, healthy.shutdowns)
	}
}

func TestRaiseFileLimit(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	if orig.Max < 2048 {
		t.Skipf("hard open file limit %d: too low to lower safely", orig.Max)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	// Lowered by half, not to a handful: goroutines of earlier tests may
	// still open files.
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: orig.Max / 2, Max: orig.Max}); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	got := raiseFileLimit(slog.New(slog.NewTextHandler(&logs, nil)))
	var now syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &now); err != nil {
		t.Fatal(err)
	}
	if got != orig.Max || now.Cur != orig.Max {
		t.Errorf("raiseFileLimit() = %d, soft limit now %d; want both the hard limit %d", got, now.Cur, orig.Max)
	}
	if want := fmt.Sprintf("open file limit\" nofile=%d", orig.Max); !strings.Contains(logs.String(), want) {
		t.Errorf("log %q, want %q", logs.String(), want)
	}
}
