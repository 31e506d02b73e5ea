package sshexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// Result is what a remote command did.
type Result struct {
	// ExitCode is the command's exit status; 128+n when signal n killed it.
	ExitCode int
	// Signal names the signal that killed the command ("KILL"), if any.
	Signal string
	// Stdout and Stderr hold the first Config.MaxOutputBytes of each stream.
	Stdout, Stderr []byte
	// Truncated reports whether either stream was longer than that.
	Truncated bool
}

// Err returns nil when the command succeeded, else an *ExitError.
func (r Result) Err() error {
	if r.ExitCode == 0 && r.Signal == "" {
		return nil
	}
	return &ExitError{Code: r.ExitCode, Signal: r.Signal, Stderr: stderrTail(r.Stderr)}
}

// ExitError is a command that ran and failed.
type ExitError struct {
	Code int
	// Signal names the signal that killed the command, if any.
	Signal string
	// Stderr is the end of the command's stderr, trimmed.
	Stderr string
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("remote command exited with status %d", e.Code)
	if e.Signal != "" {
		msg = fmt.Sprintf("remote command killed by signal %s", e.Signal)
	}
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// stderrTailBytes bounds ExitError.Stderr: enough for the last few lines
// that usually say what went wrong, short enough for one log line.
const stderrTailBytes = 512

func stderrTail(b []byte) string {
	s := strings.TrimSpace(strings.ToValidUTF8(string(b), "\uFFFD"))
	if len(s) <= stderrTailBytes {
		return s
	}
	s = s[len(s)-stderrTailBytes:]
	// Do not start in the middle of a UTF-8 sequence.
	for i := 0; i < len(s) && i < 4; i++ {
		if s[i]&0xC0 != 0x80 {
			s = s[i:]
			break
		}
	}
	return "..." + strings.TrimSpace(s)
}

// Run runs cmd on the node, as `ssh node cmd` would: through the login
// user's shell, with no stdin and no terminal. The error is non-nil only
// when the command's outcome is unknown (transport failure, ctx ended); a
// command that ran and failed is reported in Result.ExitCode (see
// Result.Err).
//
// When ctx ends, the command is sent SIGKILL, its channel is closed and Run
// returns ctx's error at once with the output captured so far; cleaning up
// on a dead connection continues in the background until Close.
func (c *Client) Run(ctx context.Context, cmd string) (Result, error) {
	return c.RunInput(ctx, cmd, nil)
}

// RunInput is Run with stdin fed from r (nil means empty). r is not read
// after RunInput returns.
func (c *Client) RunInput(ctx context.Context, cmd string, stdin io.Reader) (Result, error) {
	sess, err := await(ctx, c, c.conn.NewSession, func(s *ssh.Session) { s.Close() })
	if err != nil {
		return Result{}, c.opErr(ctx, "run: open session", err)
	}
	stdout := &capWriter{limit: c.cfg.MaxOutputBytes}
	stderr := &capWriter{limit: c.cfg.MaxOutputBytes}
	sess.Stdout, sess.Stderr = stdout, stderr
	var in *detachableReader
	if stdin != nil {
		in = &detachableReader{r: stdin}
		sess.Stdin = in
	}
	result := func() Result {
		return Result{
			Stdout:    stdout.bytes(),
			Stderr:    stderr.bytes(),
			Truncated: stdout.truncated() || stderr.truncated(),
		}
	}

	done := make(chan error, 1)
	if !c.goOwned(func() { done <- sess.Run(cmd) }) {
		sess.Close()
		return Result{}, c.opErr(ctx, "run", ErrClosed)
	}
	select {
	case err := <-done:
		in.detach() // x/crypto's stdin copier may still hold it
		sess.Close()
		r := result()
		var exitErr *ssh.ExitError
		switch {
		case err == nil:
			return r, nil
		case errors.Is(err, io.EOF):
			// Run reports a copy error only once the command exited 0;
			// io.EOF is the stdin copier finding the channel closed,
			// i.e. a command that did not read all of its input.
			return r, nil
		case errors.As(err, &exitErr):
			r.ExitCode, r.Signal = exitErr.ExitStatus(), exitErr.Signal()
			return r, nil
		default:
			// Includes *ssh.ExitMissingError: the channel closed without
			// an exit status, which is what a dropped connection looks
			// like.
			return r, c.opErr(ctx, "run", err)
		}
	case <-ctx.Done():
		in.detach()
		// Signal and Close write to the connection, which may be stuck;
		// the caller should not wait for that.
		c.goOwned(func() {
			sess.Signal(ssh.SIGKILL)
			sess.Close()
		})
		return result(), c.opErr(ctx, "run", ctx.Err())
	}
}

// capWriter keeps the first limit bytes written to it and counts the rest
// as dropped, so a chatty command cannot exhaust the gateway's memory.
type capWriter struct {
	limit int

	mu      sync.Mutex
	buf     []byte // guarded by mu
	dropped bool   // guarded by mu
}

func (w *capWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	room := w.limit - len(w.buf)
	if len(p) > room {
		w.buf = append(w.buf, p[:max(room, 0)]...)
		w.dropped = true
	} else {
		w.buf = append(w.buf, p...)
	}
	// Always claim the whole write so the session keeps draining the
	// stream instead of stalling the remote command.
	return len(p), nil
}

func (w *capWriter) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]byte(nil), w.buf...)
}

func (w *capWriter) truncated() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dropped
}

// errDetached is what a detached reader returns to the copier still
// holding it.
var errDetached = errors.New("sshexec: input no longer available")

// detachableReader lets a call return while a library goroutine still holds
// the caller's reader: after detach, Read fails without touching r, and
// detach waits for a Read in progress, so r is never used after the call
// returns.
type detachableReader struct {
	mu       sync.Mutex
	r        io.Reader // guarded by mu
	detached bool      // guarded by mu
}

func (d *detachableReader) Read(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.detached {
		return 0, errDetached
	}
	return d.r.Read(p)
}

// detach is a no-op on a nil reader, for calls without input.
func (d *detachableReader) detach() {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.detached = true
	d.mu.Unlock()
}
