package sshexec

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"github.com/pkg/sftp"
)

// SFTP tuning. Writes are pipelined: each session keeps up to
// sftpInflightBytes of writes unanswered, so throughput does not wait on
// round trips. More in flight than that does not pay: OpenSSH grants a
// session channel a 2 MiB window, and once a sender fills it sshd's and
// sftp-server's buffers hold the backlog, which they move in memory again
// and again: a 5 MiB upload cost sshd 160 ms of CPU with 2 MiB in flight,
// 38–60 ms with 0.5–1 MiB, and finished sooner (bench: BenchmarkUploadSmall).
// A fixed amount, not one sized by a measured round trip: a gateway busy
// with many nodes measures its own scheduling delay as round trip, and
// sizing by it put 2 MiB in flight exactly when the servers were busiest
// (BenchmarkFleet100: 12.1 s against 8.2 s). One session over a long link
// is held to 1 MiB per round trip; large files use several sessions.
const (
	sftpInflightBytes = 1 << 20
	// sftpDefaultPacket is the write size every SFTP server must accept.
	sftpDefaultPacket = 32 << 10
)

// sftpConcurrency is how many writes of writeSize bytes one session keeps
// in flight.
func sftpConcurrency(writeSize int) int {
	return max(sftpInflightBytes/writeSize, 2)
}

// UploadResult describes a finished upload.
type UploadResult struct {
	// Bytes is how many bytes were read from src and written.
	Bytes int64
	// SHA256 is the lower-case hex SHA-256 of those bytes, computed locally
	// while streaming, for comparing with the node's own checksum.
	SHA256 string
	// Sessions is how many SFTP sessions carried the data: 1, or more for
	// a large file spread over several (see Upload).
	Sessions int
}

// Upload streams src into remotePath over SFTP, creating or truncating it,
// and sets its permissions to mode before any data is written. Relative
// paths are relative to Home.
//
// When src's remaining size is known without reading it (an *os.File, or a
// reader with Len) and is at least 32 MiB, the data is spread over up to
// Config.UploadSessions SFTP sessions on the connection, each writing its
// own chunks at their offsets: one channel's window, not the link, is what
// limits one session over a long round trip. src is still read once, in
// order, and the SHA-256 is of exactly the bytes written. src's file offset
// is then not advanced.
//
// When ctx ends, the Client's SFTP session is closed (aborting any other
// SFTP transfer on this Client too; the next call starts a new session) and
// Upload returns ctx's error at once. On any error remotePath may be left
// partly written; the caller removes it. src is not read after Upload
// returns.
func (c *Client) Upload(ctx context.Context, src io.Reader, remotePath string, mode fs.FileMode) (UploadResult, error) {
	op := "upload " + remotePath
	if err := c.waitDrains(ctx); err != nil {
		return UploadResult{}, c.opErr(ctx, op, err)
	}
	s, err := c.sftpClient(ctx)
	if err != nil {
		return UploadResult{}, c.opErr(ctx, op, err)
	}
	in := &detachableReader{r: src}
	c.mu.Lock()
	writeSize := c.sftpWriteSize
	c.mu.Unlock()
	var (
		n        int64
		sum      []byte
		sessions = 1
		abort    = func() {}
	)
	body := func() error {
		var err error
		n, sum, err = uploadSequential(s, in, remotePath, mode, writeSize)
		return err
	}
	if size, ok := uploadSize(src); ok && size >= cmp.Or(c.parallelMin, parallelUploadMin) && c.cfg.UploadSessions > 1 {
		u := newParallelUpload(c, remotePath, writeSize, c.cfg.UploadSessions)
		abort = u.abort
		body = func() error {
			var err error
			n, sum, err = u.run(s, in, mode, c.cfg.UploadSessions)
			sessions = max(int(u.used.Load()), 1)
			return err
		}
	}
	done := make(chan error, 1)
	if !c.goOwned(func() { done <- body() }) {
		return UploadResult{}, c.opErr(ctx, op, ErrClosed)
	}
	select {
	case err := <-done:
		in.detach()
		if err != nil {
			return UploadResult{}, c.opErr(ctx, op, err)
		}
		return UploadResult{Bytes: n, SHA256: hex.EncodeToString(sum), Sessions: sessions}, nil
	case <-ctx.Done():
		in.detach()
		abort()
		c.abortSFTP(s)
		return UploadResult{}, c.opErr(ctx, op, ctx.Err())
	}
}

// uploadSequential writes src into remotePath over one SFTP session, with
// pkg/sftp's pipelined writes of writeSize bytes.
func uploadSequential(s *sftp.Client, src io.Reader, remotePath string, mode fs.FileMode, writeSize int) (int64, []byte, error) {
	f, err := s.OpenFile(remotePath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return 0, nil, err
	}
	// Before the data, so the content is never readable with the server's
	// default permissions.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return 0, nil, err
	}
	h := sha256.New()
	// An explicit concurrency: ReadFrom would fall back to sequential
	// writes for a reader of unknown length such as this tee.
	n, err := f.ReadFromWithConcurrency(io.TeeReader(src, h), sftpConcurrency(writeSize))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, nil, err
	}
	return n, h.Sum(nil), nil
}

// Home returns the login's working directory on the node (SFTP
// realpath "."), against which relative deploy paths resolve.
func (c *Client) Home(ctx context.Context) (string, error) {
	s, err := c.sftpClient(ctx)
	if err != nil {
		return "", c.opErr(ctx, "home", err)
	}
	home, err := await(ctx, c, func() (string, error) { return s.RealPath(".") }, nil)
	if err != nil {
		return "", c.opErr(ctx, "home", err)
	}
	return home, nil
}

// sftpClient returns the Client's SFTP session, starting it on first use or
// after the previous one ended.
func (c *Client) sftpClient(ctx context.Context) (*sftp.Client, error) {
	select {
	case c.sftpStart <- struct{}{}:
		defer func() { <-c.sftpStart }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c.mu.Lock()
	s := c.sftp
	c.mu.Unlock()
	if s != nil {
		return s, nil
	}
	st, err := await(ctx, c, func() (sftpSession, error) {
		return openSFTP(c.conn, c.sftpWriteCap)
	}, sftpSession.close)
	if err != nil {
		return nil, fmt.Errorf("start sftp: %w", err)
	}
	c.log.Debug("sftp started", "write_size", st.writeSize)
	s = st.client
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		st.close()
		return nil, ErrClosed
	}
	c.sftp = s
	c.sftpWriteSize = st.writeSize
	c.mu.Unlock()
	// Forget the session as soon as it ends (server gone, aborted), so the
	// next call starts a fresh one instead of failing forever.
	if !c.goOwned(func() {
		s.Wait()
		c.forgetSFTP(s)
		st.sess.Close()
	}) {
		st.close()
		return nil, ErrClosed
	}
	return s, nil
}

// forgetSFTP drops s from the cache if it is still there.
func (c *Client) forgetSFTP(s *sftp.Client) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sftp != s {
		return false
	}
	c.sftp = nil
	return true
}

// abortSFTP ends s, failing every request in flight on it. Closing may wait
// for the server, so it runs in the background, as a drain.
func (c *Client) abortSFTP(s *sftp.Client) {
	c.forgetSFTP(s)
	c.drain(func() { s.Close() })
}

// drain runs closeSession, which ends an abandoned SFTP session and returns
// once the server's end has exited, in the background; waitDrains waits for
// it. Why: writes an abandoned upload had already sent are still carried
// out by that session's server process until it exits, and they must not
// land in a file a later Upload writes.
func (c *Client) drain(closeSession func()) {
	done := make(chan struct{})
	c.mu.Lock()
	c.drains = append(c.drains, done)
	c.mu.Unlock()
	if !c.goOwned(func() {
		defer close(done)
		closeSession()
	}) {
		// Closed: the connection is gone, so this returns at once.
		closeSession()
		close(done)
	}
}

// waitDrains waits until every session handed to drain so far has ended,
// or ctx ends.
func (c *Client) waitDrains(ctx context.Context) error {
	c.mu.Lock()
	pending := c.drains
	c.mu.Unlock()
	for _, done := range pending {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.mu.Lock()
	// Forget the ones waited for; drains added meanwhile stay.
	c.drains = slices.DeleteFunc(c.drains, func(d chan struct{}) bool { return slices.Contains(pending, d) })
	c.mu.Unlock()
	return nil
}
