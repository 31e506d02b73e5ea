package sshexec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/internal/testproxy"
)

func TestBackoff(t *testing.T) {
	const lo, hi = 200 * time.Millisecond, 2 * time.Second
	tests := []struct {
		n    int
		r    float64
		want time.Duration
	}{
		{1, 0, 200 * time.Millisecond},
		{1, 0.999999, 100*time.Millisecond + 100}, // at most half is taken off
		{2, 0, 400 * time.Millisecond},
		{3, 0.5, 600 * time.Millisecond},
		{4, 0, 1600 * time.Millisecond},
		{5, 0, 2 * time.Second}, // capped
		{70, 0, 2 * time.Second},
		{70, 0.5, 1500 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := backoff(lo, hi, tt.n, tt.r); got != tt.want {
			t.Errorf("backoff(%v, %v, %d, %v) = %v, want %v", lo, hi, tt.n, tt.r, got, tt.want)
		}
	}
}

// retryLog collects the "retrying" records Dial logs, one per retry.
type retryLog struct {
	mu      sync.Mutex
	errs    []string // guarded by mu
	retried chan struct{}
	once    sync.Once
}

func newRetryLog() *retryLog { return &retryLog{retried: make(chan struct{})} }

func (l *retryLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *retryLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *retryLog) WithGroup(string) slog.Handler            { return l }

func (l *retryLog) Handle(_ context.Context, r slog.Record) error {
	if !strings.Contains(r.Message, "retrying") {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			l.mu.Lock()
			l.errs = append(l.errs, a.Value.String())
			l.mu.Unlock()
		}
		return true
	})
	l.once.Do(func() { close(l.retried) })
	return nil
}

func (l *retryLog) retries() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.errs...)
}

// fastRetries makes retries quick enough for tests.
func fastRetries(cfg Config, retries int, log *retryLog) Config {
	cfg.DialRetries = retries
	cfg.DialBackoff = 20 * time.Millisecond
	cfg.DialMaxBackoff = 50 * time.Millisecond
	cfg.Logger = slog.New(log)
	return cfg
}

// holdStartup opens a connection to addr and reads sshd's banner, then
// leaves it unauthenticated: with "MaxStartups 1:100:1" sshd then drops
// every other new connection until it is closed. It retries while an
// earlier connection (testsshd's readiness probe, a closed holder) still
// holds the slot.
func holdStartup(t *testing.T, addr string) net.Conn {
	t.Helper()
	var last string
	for range 100 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err == nil && strings.HasPrefix(string(buf[:n]), "SSH-2.0-") {
			t.Cleanup(func() { c.Close() })
			return c
		}
		c.Close()
		last = fmt.Sprintf("%q, %v", buf[:n], err)
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no startup slot on %s: last answer %s", addr, last)
	return nil
}

func TestDialRetriesMaxStartups(t *testing.T) {
	s := startSSHD(t, sshdOptions{extraConfig: []string{"MaxStartups 1:100:1"}})
	p := testproxy.StartOn(t, s.host, s.addr)
	blocker := holdStartup(t, s.addr)

	t.Run("succeeds once the server has room", func(t *testing.T) {
		log := newRetryLog()
		cfg := fastRetries(s.config(), 50, log)
		cfg.Address = p.Addr()
		go func() {
			// Free the server's only startup slot after the first refusal.
			select {
			case <-log.retried:
			case <-time.After(10 * time.Second):
			}
			blocker.Close()
		}()
		c := dial(t, cfg)
		if _, err := c.Run(context.Background(), "true"); err != nil {
			t.Fatalf("Run: %v", err)
		}
		retries := log.retries()
		if len(retries) == 0 || p.Accepted() != int64(len(retries)+1) {
			t.Fatalf("%d connections for %d retries, want one more connection than retries and at least one retry", p.Accepted(), len(retries))
		}
		if !strings.Contains(retries[0], "closed before the SSH banner") || !strings.Contains(retries[0], "MaxStartups") {
			t.Errorf("first retry's error = %q, want it to say the server closed before its banner, at MaxStartups", retries[0])
		}
	})

	t.Run("gives up after DialRetries", func(t *testing.T) {
		holdStartup(t, s.addr)
		before := p.Accepted()
		log := newRetryLog()
		cfg := fastRetries(s.config(), 2, log)
		cfg.Address = p.Addr()
		_, err := Dial(context.Background(), cfg)
		// sshd closes with its message read (EOF, and the error quotes
		// "Exceeded MaxStartups") or unread (a reset that loses the
		// message, and the error names MaxStartups as the likely cause).
		if !droppedConn(err) || !strings.Contains(err.Error(), "closed before the SSH banner") ||
			!strings.Contains(err.Error(), "MaxStartups") || !strings.Contains(err.Error(), "gave up after 3 attempts") {
			t.Fatalf("Dial = %v, want the connection dropped at MaxStartups, 3 attempts", err)
		}
		if got := p.Accepted() - before; got != 3 {
			t.Errorf("%d connections, want 3 (1 + DialRetries)", got)
		}
	})
}

// TestDialRetriesReset: a connection reset in the middle of the key
// exchange is retried.
func TestDialRetriesReset(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	p := testproxy.StartOn(t, s.host, s.addr)
	// The client's banner is 17 bytes; the reset comes in its KEXINIT.
	p.CutAfter(40)
	log := newRetryLog()
	cfg := fastRetries(s.config(), 3, log)
	cfg.Address = p.Addr()
	c := dial(t, cfg)
	if _, err := c.Run(context.Background(), "true"); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := log.retries(); len(got) != 1 {
		t.Errorf("retries = %q, want exactly one", got)
	}
}

// TestDialNotRetried: failures that another attempt cannot fix are
// reported after one connection.
func TestDialNotRetried(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	p := testproxy.StartOn(t, s.host, s.addr)
	stranger, _ := newEd25519Signer(t)
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr func(error) bool
	}{
		{
			name:   "host key mismatch",
			mutate: func(c *Config) { c.HostKeys = HostKeys{Pinned: []ssh.PublicKey{randomPublicKey(t)}} },
			wantErr: func(err error) bool {
				var hk *HostKeyError
				return errors.As(err, &hk)
			},
		},
		{
			name:    "authentication failure",
			mutate:  func(c *Config) { c.Auth = Auth{Signers: []ssh.Signer{stranger}} },
			wantErr: func(err error) bool { return strings.Contains(err.Error(), "unable to authenticate") },
		},
		{
			name:    "handshake timeout",
			mutate:  func(c *Config) { c.Address = silentServer(t); c.HandshakeTimeout = 100 * time.Millisecond },
			wantErr: func(err error) bool { return strings.Contains(err.Error(), "no answer within") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := p.Accepted()
			log := newRetryLog()
			cfg := fastRetries(s.config(), 5, log)
			cfg.Address = p.Addr()
			tt.mutate(&cfg)
			_, err := Dial(context.Background(), cfg)
			if err == nil || !tt.wantErr(err) {
				t.Fatalf("Dial = %v", err)
			}
			if strings.Contains(err.Error(), "attempts") {
				t.Errorf("Dial = %v, want no mention of attempts", err)
			}
			if got := log.retries(); len(got) != 0 {
				t.Errorf("retried after %q", got)
			}
			if cfg.Address == p.Addr() {
				if got := p.Accepted() - before; got != 1 {
					t.Errorf("%d connections, want 1", got)
				}
			}
		})
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	host, _ := randomLoopback()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestDialRetriesRefused(t *testing.T) {
	log := newRetryLog()
	cfg := fastRetries(Config{
		Address:  closedAddr(t),
		User:     "deploy",
		Auth:     Auth{Password: "pw"},
		HostKeys: HostKeys{Pinned: []ssh.PublicKey{randomPublicKey(t)}},
	}, 2, log)
	_, err := Dial(context.Background(), cfg)
	if !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), "gave up after 3 attempts") {
		t.Fatalf("Dial = %v, want connection refused after 3 attempts", err)
	}
	if got := log.retries(); len(got) != 2 {
		t.Errorf("retries = %q, want 2", got)
	}

	t.Run("no retries", func(t *testing.T) {
		log := newRetryLog()
		cfg := fastRetries(cfg, -1, log)
		_, err := Dial(context.Background(), cfg)
		if !errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(err.Error(), "attempts") {
			t.Fatalf("Dial = %v, want connection refused after one attempt", err)
		}
		if got := log.retries(); len(got) != 0 {
			t.Errorf("retried after %q", got)
		}
	})
	t.Run("ctx ends during backoff", func(t *testing.T) {
		cfg := cfg
		cfg.DialBackoff, cfg.DialMaxBackoff = time.Minute, time.Minute
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := Dial(ctx, cfg)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("Dial = %v, want the deadline and the last error", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Dial returned %v after the ctx ended", d)
		}
	})
}

// countingServer accepts connections, counts them and stays silent, like
// an sshd too busy to answer.
func countingServer(t *testing.T) (addr string, accepted *atomic.Int64) {
	t.Helper()
	host, _ := randomLoopback()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), accepted
}

func TestDialLimiter(t *testing.T) {
	addr, accepted := countingServer(t)
	l := NewDialLimiter(2)
	if l.Limit() != 2 {
		t.Fatalf("Limit = %d, want 2", l.Limit())
	}
	cfg := Config{
		Address:          addr,
		User:             "deploy",
		Auth:             Auth{Password: "pw"},
		HostKeys:         HostKeys{Pinned: []ssh.PublicKey{randomPublicKey(t)}},
		HandshakeTimeout: 600 * time.Millisecond,
		DialLimiter:      l,
	}
	const dials = 5
	errc := make(chan error, dials)
	for range dials {
		go func() {
			_, err := Dial(context.Background(), cfg)
			errc <- err
		}()
	}
	// The first two connect; the other three wait for a slot until the
	// first two time out.
	for i := 0; accepted.Load() < 2 || l.Waiting() < dials-2; i++ {
		if i == 500 {
			t.Fatalf("within 5s: %d dials connected, %d waiting; want 2 and %d", accepted.Load(), l.Waiting(), dials-2)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := accepted.Load(); got != 2 {
		t.Errorf("%d connections at once, want the limiter's 2", got)
	}
	for range dials {
		select {
		case err := <-errc:
			if err == nil || !strings.Contains(err.Error(), "no answer within") {
				t.Errorf("Dial = %v, want a handshake timeout", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("dials did not finish")
		}
	}
	if got := accepted.Load(); got != dials {
		t.Errorf("%d connections in all, want %d", got, dials)
	}
}

func TestDialLimiterContext(t *testing.T) {
	var l DialLimiter // the zero value works
	if got := l.Limit(); got != DefaultDialConcurrency {
		t.Fatalf("zero DialLimiter Limit = %d, want %d", got, DefaultDialConcurrency)
	}
	one := NewDialLimiter(1)
	if err := one.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer one.release()
	addr, accepted := countingServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := Dial(ctx, Config{
		Address:     addr,
		User:        "deploy",
		Auth:        Auth{Password: "pw"},
		HostKeys:    HostKeys{Pinned: []ssh.PublicKey{randomPublicKey(t)}},
		DialLimiter: one,
	})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "dial slot") {
		t.Fatalf("Dial = %v, want the deadline while waiting for a slot", err)
	}
	if got := accepted.Load(); got != 0 {
		t.Errorf("%d connections made without a slot", got)
	}
}
