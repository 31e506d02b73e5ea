package sshexec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// ErrClosed is wrapped by the errors of calls on a Client after Close.
var ErrClosed = errors.New("client closed")

// ErrKeepalive is wrapped by the errors of calls that failed because the
// node stopped answering keepalive probes and the Client closed the
// connection.
var ErrKeepalive = errors.New("keepalive timed out")

const clientVersion = "SSH-2.0-Outpost"

// Client is one SSH connection to a node. Its methods may be called
// concurrently; each call uses its own channel on the connection.
type Client struct {
	cfg  Config
	log  *slog.Logger
	conn *ssh.Client

	closing   chan struct{} // closed by Close; stops the keepalive loop
	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex
	closed bool  // guarded by mu; set by Close before waiting on wg
	broken error // guarded by mu; why the Client closed the connection itself
	wg     sync.WaitGroup

	sftpStart chan struct{} // one-slot semaphore: one caller starts the SFTP session
	sftp      *sftp.Client  // guarded by mu; nil until first needed or after it ended
	// sftpWriteCap, when positive, caps the SFTP write size; benchmarks
	// use it to compare against the 32 KiB default.
	sftpWriteCap int
	// sftpWriteSize is the write size of the current SFTP session; guarded
	// by mu.
	sftpWriteSize int
	// drains are closed as abandoned SFTP sessions finish ending; guarded
	// by mu. See drain.
	drains []chan struct{}
	// parallelMin, when positive, replaces parallelUploadMin; tests lower
	// it to keep their uploads small.
	parallelMin int64
	// onUploadSession, when set, is called as each session of a parallel
	// upload starts writing; tests use it to know the sessions are there.
	onUploadSession func()
}

// Dial connects to cfg.Address, verifies the host key and authenticates.
// ctx bounds the whole dial, retries and waits for a cfg.DialLimiter slot
// included: when it ends the connection is closed and Dial returns
// promptly. ctx is not kept: the Client lives until Close. A refused host
// key is reported as a *HostKeyError, before any credential is sent.
//
// An attempt that the server refuses or drops before its host key is seen
// (connection refused or reset, sshd's MaxStartups) is retried up to
// cfg.DialRetries times with jittered backoff; a refused host key, failed
// authentication or a timeout never is.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	verifier, err := newHostKeyVerifier(cfg.Address, cfg.HostKeys)
	if err != nil {
		return nil, err
	}
	auth, releaseAuth, err := authMethods(ctx, cfg.Auth)
	if err != nil {
		return nil, err
	}
	defer releaseAuth()

	conn, err := connect(ctx, cfg, verifier, auth)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:     cfg,
		log:     cfg.Logger.With("node_address", cfg.Address, "user", cfg.User),
		conn:    conn,
		closing: make(chan struct{}),

		sftpStart: make(chan struct{}, 1),
	}
	c.log.Debug("ssh connected", "server_version", string(conn.ServerVersion()))
	if cfg.KeepaliveInterval > 0 {
		c.wg.Add(1)
		go c.keepalive()
	}
	return c, nil
}

// keepalive probes the server every interval. A probe that has not been
// answered within an interval counts as missed; one probe is in flight at a
// time because x/crypto serializes global requests anyway. After MaxMissed
// missed intervals the connection is closed, which fails every call blocked
// on it.
func (c *Client) keepalive() {
	defer c.wg.Done()
	interval, maxMissed := c.cfg.KeepaliveInterval, c.cfg.KeepaliveMaxMissed
	t := time.NewTicker(interval)
	defer t.Stop()
	var (
		inflight chan error // non-nil while a probe waits for its reply
		missed   int
	)
	for {
		select {
		case <-c.closing:
			return
		case err := <-inflight:
			inflight = nil
			if err != nil {
				// The connection is gone; calls see that themselves.
				return
			}
			missed = 0
		case <-t.C:
			if inflight != nil {
				missed++
				if missed >= maxMissed {
					c.fail(fmt.Errorf("%w: no reply from %s for %d probes at %v intervals; connection closed",
						ErrKeepalive, c.cfg.Address, missed, interval))
					return
				}
				continue
			}
			inflight = make(chan error, 1)
			c.wg.Add(1)
			go func(reply chan<- error) {
				defer c.wg.Done()
				// OpenSSH answers with a failure message; any answer proves
				// the path is alive.
				_, _, err := c.conn.SendRequest("keepalive@openssh.com", true, nil)
				reply <- err
			}(inflight)
		}
	}
}

// fail records why the Client gave up on the connection and closes it.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.broken == nil {
		c.broken = err
	}
	c.mu.Unlock()
	c.log.Warn("ssh connection closed", "error", err)
	c.conn.Close()
}

// opErr wraps err from operation op, adding why the connection was closed
// when the Client closed it (keepalive) and preferring ctx's error when ctx
// ended.
func (c *Client) opErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("sshexec: %s: %w", op, context.Cause(ctx))
	}
	c.mu.Lock()
	broken, closed := c.broken, c.closed
	c.mu.Unlock()
	switch {
	case broken != nil:
		return fmt.Errorf("sshexec: %s: %w (%w)", op, broken, err)
	case closed:
		return fmt.Errorf("sshexec: %s: %w", op, ErrClosed)
	}
	return fmt.Errorf("sshexec: %s: %w", op, err)
}

// goOwned runs f in a goroutine that Close waits for. It reports false,
// without running f, when the Client is already closed.
func (c *Client) goOwned(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// await runs f in a goroutine owned by c and returns its result, or ctx's
// error as soon as ctx ends; f's late result is then handed to discard so
// that nothing it opened leaks. x/crypto and pkg/sftp calls take no
// context; this is how they honor one. Errors are returned unwrapped.
func await[T any](ctx context.Context, c *Client, f func() (T, error), discard func(T)) (T, error) {
	type result struct {
		v   T
		err error
	}
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	// A connection the Client gave up on (keepalive) takes no new work:
	// x/crypto may wait forever for the reply to a channel opened on a
	// closed connection whose key exchange was under way.
	c.mu.Lock()
	broken := c.broken != nil
	c.mu.Unlock()
	if broken {
		return zero, ErrClosed
	}
	done := make(chan result) // unbuffered: a result is either taken or discarded
	abandoned := make(chan struct{})
	if !c.goOwned(func() {
		v, err := f()
		select {
		case done <- result{v, err}:
		case <-abandoned:
			if err == nil && discard != nil {
				discard(v)
			}
		}
	}) {
		return zero, ErrClosed
	}
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		close(abandoned)
		return zero, ctx.Err()
	}
}

// Close closes the connection, which ends every call in flight, and waits
// for the goroutines the Client started. It is safe to call more than once.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		s := c.sftp
		c.sftp = nil
		broken := c.broken
		c.mu.Unlock()
		close(c.closing)
		// Closing the SSH connection first unblocks everything, even on a
		// dead network path; the SFTP client then shuts down at once.
		err := c.conn.Close()
		if s != nil {
			s.Close()
		}
		c.wg.Wait()
		if err != nil && broken == nil && !errors.Is(err, net.ErrClosed) {
			c.closeErr = fmt.Errorf("sshexec: close %s: %w", c.cfg.Address, err)
		}
		c.log.Debug("ssh closed")
	})
	return c.closeErr
}
