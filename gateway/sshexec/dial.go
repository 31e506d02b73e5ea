package sshexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// DefaultDialConcurrency is how many connection set-ups a zero DialLimiter,
// or NewDialLimiter(0), lets run at once.
const DefaultDialConcurrency = 32

// DialLimiter bounds how many SSH connection set-ups (TCP connect,
// handshake, authentication) run at once across the Dials that share it,
// for example every node of one gateway. Without it a batch of 1,000 nodes
// would open 1,000 unauthenticated connections at once, and servers behind
// one sshd, or a jump host, drop what exceeds their MaxStartups. A slot is
// held only while one attempt runs: not during a retry's backoff, and not
// once the connection is up.
//
// The zero value allows DefaultDialConcurrency; a DialLimiter must not be
// copied after first use. It is safe for concurrent use.
type DialLimiter struct {
	once    sync.Once
	n       int
	slots   chan struct{} // one token per running set-up; made by once
	waiting atomic.Int64  // set-ups waiting for a slot
}

// NewDialLimiter returns a limiter allowing n set-ups at once; n <= 0 means
// DefaultDialConcurrency.
func NewDialLimiter(n int) *DialLimiter {
	return &DialLimiter{n: n}
}

func (l *DialLimiter) init() {
	l.once.Do(func() {
		if l.n <= 0 {
			l.n = DefaultDialConcurrency
		}
		l.slots = make(chan struct{}, l.n)
	})
}

// Limit reports how many set-ups may run at once.
func (l *DialLimiter) Limit() int {
	l.init()
	return l.n
}

// Waiting reports how many set-ups wait for a slot.
func (l *DialLimiter) Waiting() int {
	return int(l.waiting.Load())
}

// acquire waits for a slot or for ctx to end.
func (l *DialLimiter) acquire(ctx context.Context) error {
	l.init()
	select {
	case l.slots <- struct{}{}:
		return nil
	default:
	}
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *DialLimiter) release() { <-l.slots }

// connect sets up the SSH connection, retrying with jittered exponential
// backoff while attempts fail in a way a busy or restarting server causes.
func connect(ctx context.Context, cfg Config, v *hostKeyVerifier, auth []ssh.AuthMethod) (*ssh.Client, error) {
	for attempt := 1; ; attempt++ {
		conn, retry, err := connectOnce(ctx, cfg, v, auth)
		if err == nil {
			if attempt > 1 {
				cfg.Logger.Info("ssh connected after retries", "node_address", cfg.Address, "attempts", attempt)
			}
			return conn, nil
		}
		if !retry || attempt > cfg.DialRetries || ctx.Err() != nil {
			if attempt > 1 {
				return nil, fmt.Errorf("%w (gave up after %d attempts)", err, attempt)
			}
			return nil, err
		}
		wait := backoff(cfg.DialBackoff, cfg.DialMaxBackoff, attempt, rand.Float64())
		cfg.Logger.Info("ssh connect failed; retrying", "node_address", cfg.Address,
			"attempt", attempt, "retry_in", wait, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("sshexec: dial %s: %w (while waiting to retry after %d attempts; last error: %v)",
				cfg.Address, context.Cause(ctx), attempt, err)
		}
	}
}

// backoff is the wait after failed attempt n (1-based): lo doubled n-1
// times, capped at hi, then jittered down by up to half (r in [0, 1)), so
// that nodes refused together do not come back together.
func backoff(lo, hi time.Duration, n int, r float64) time.Duration {
	d := hi
	if n-1 < 32 {
		if b := lo << (n - 1); b > 0 && b < hi {
			d = b
		}
	}
	return d - time.Duration(r*float64(d/2))
}

// connectOnce makes one attempt. retry reports whether the failure is one
// worth another attempt: the TCP connect refused or reset, or the
// connection closed or reset before the server's host key was seen, which
// is how sshd sheds connections beyond MaxStartups. A host key refusal,
// failed authentication, a timeout, or anything after the key exchange is
// not retried: trying again cannot fix it, or would look like an attack.
func connectOnce(ctx context.Context, cfg Config, v *hostKeyVerifier, auth []ssh.AuthMethod) (_ *ssh.Client, retry bool, _ error) {
	if l := cfg.DialLimiter; l != nil {
		if err := l.acquire(ctx); err != nil {
			return nil, false, fmt.Errorf("sshexec: dial %s: waiting for a dial slot: %w", cfg.Address, context.Cause(ctx))
		}
		defer l.release()
	}
	d := net.Dialer{Timeout: cfg.DialTimeout}
	if cfg.LocalAddr != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(cfg.LocalAddr)}
	}
	tcp, err := d.DialContext(ctx, "tcp", cfg.Address)
	if err != nil {
		return nil, ctx.Err() == nil && droppedConn(err), fmt.Errorf("sshexec: dial %s: %w", cfg.Address, err)
	}
	rc := &bannerConn{Conn: tcp}
	var keySeen atomic.Bool
	check := func(host string, remote net.Addr, key ssh.PublicKey) error {
		keySeen.Store(true)
		return v.check(host, remote, key)
	}
	conn, err := handshake(ctx, rc, cfg, check, v.algorithms, auth)
	if err == nil {
		return conn, false, nil
	}
	return nil, ctx.Err() == nil && !keySeen.Load() && droppedConn(err), err
}

// droppedConn reports whether err is the peer refusing, resetting or
// closing the connection.
func droppedConn(err error) bool {
	for _, target := range []error{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EPIPE, io.EOF, io.ErrUnexpectedEOF} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// bannerConn keeps the first bytes read from a connection, to tell a
// server that closed before its SSH banner from one that failed later.
type bannerConn struct {
	net.Conn

	mu   sync.Mutex
	head []byte // guarded by mu; the first bannerHead bytes read
}

const bannerHead = 256

func (c *bannerConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if room := bannerHead - len(c.head); room > 0 {
		c.head = append(c.head, p[:min(n, room)]...)
	}
	c.mu.Unlock()
	return n, err
}

// beforeBanner reports whether no SSH banner was read, and the first line
// the server sent instead, if any.
func (c *bannerConn) beforeBanner() (said string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for rest := string(c.head); rest != ""; {
		line, after, found := strings.Cut(rest, "\n")
		if strings.HasPrefix(line, "SSH-") {
			return "", false
		}
		if !found {
			break
		}
		rest = after
	}
	line, _, _ := strings.Cut(string(c.head), "\n")
	return strings.ToValidUTF8(strings.TrimSpace(line), "?"), true
}

// handshake runs the SSH handshake on tcp, closing tcp when ctx ends or the
// handshake timeout passes so that a silent server cannot hold Dial.
func handshake(ctx context.Context, tcp net.Conn, cfg Config, check ssh.HostKeyCallback, hostKeyAlgos []string, auth []ssh.AuthMethod) (*ssh.Client, error) {
	sc := &ssh.ClientConfig{
		Config: ssh.Config{
			// AES-GCM first: with AES-NI it is the fastest cipher for
			// uploads. The rest are the library's secure defaults.
			Ciphers: preferFirst(ssh.SupportedAlgorithms().Ciphers, ssh.CipherAES128GCM),
		},
		User:              cfg.User,
		Auth:              auth,
		HostKeyCallback:   check,
		HostKeyAlgorithms: hostKeyAlgos,
		ClientVersion:     clientVersion,
	}
	if err := tcp.SetDeadline(time.Now().Add(cfg.HandshakeTimeout)); err != nil {
		tcp.Close()
		return nil, fmt.Errorf("sshexec: dial %s: %w", cfg.Address, err)
	}
	stop := context.AfterFunc(ctx, func() { tcp.Close() })
	sconn, chans, reqs, err := ssh.NewClientConn(tcp, cfg.Address, sc)
	if !stop() {
		// ctx ended: tcp is closed or about to be, whatever the outcome.
		if sconn != nil {
			sconn.Close()
		}
		tcp.Close()
		return nil, fmt.Errorf("sshexec: handshake with %s: %w", cfg.Address, context.Cause(ctx))
	}
	if err != nil {
		tcp.Close()
		var hkErr *HostKeyError
		if errors.As(err, &hkErr) {
			return nil, hkErr
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("sshexec: handshake with %s: no answer within %v: %w", cfg.Address, cfg.HandshakeTimeout, err)
		}
		if bc, ok := tcp.(*bannerConn); ok && droppedConn(err) {
			if said, ok := bc.beforeBanner(); ok {
				// Name the cause an operator can act on: sshd says
				// "Exceeded MaxStartups" (OpenSSH 8.x and later), or
				// nothing at all.
				what := "server busy, beyond its MaxStartups?"
				if said != "" {
					what = fmt.Sprintf("server said %q", said)
				}
				return nil, fmt.Errorf("sshexec: handshake with %s: closed before the SSH banner (%s): %w", cfg.Address, what, err)
			}
		}
		return nil, fmt.Errorf("sshexec: handshake with %s: %w", cfg.Address, err)
	}
	if err := tcp.SetDeadline(time.Time{}); err != nil {
		sconn.Close()
		return nil, fmt.Errorf("sshexec: handshake with %s: %w", cfg.Address, err)
	}
	return ssh.NewClient(sconn, chans, reqs), nil
}

func preferFirst(list []string, first string) []string {
	return append([]string{first}, slices.DeleteFunc(slices.Clone(list), func(s string) bool { return s == first })...)
}
