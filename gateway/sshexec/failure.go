package sshexec

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
)

// The classes FailureClass sorts failed connections into: the label
// values of the gateway's outpost_ssh_failures_total.
const (
	// FailureAuth: the node refused every credential offered.
	FailureAuth = "auth"
	// FailureHostKey: the node's host key was refused (unknown, changed,
	// revoked); nothing was sent to it.
	FailureHostKey = "host_key"
	// FailureRefused: nothing listens at the address.
	FailureRefused = "refused"
	// FailureTimeout: no answer in time (connect, handshake, keepalive).
	FailureTimeout = "timeout"
	// FailureReset: the connection was reset or closed under us.
	FailureReset = "reset"
	// FailureOther: anything else.
	FailureOther = "other"
)

// FailureClasses lists every class FailureClass returns.
var FailureClasses = []string{FailureAuth, FailureHostKey, FailureRefused, FailureTimeout, FailureReset, FailureOther}

// FailureClass sorts an error of Dial (or of a command on a connection
// Dial made) into one of FailureClasses, for metrics: an operator reads a
// rise in "host_key" as a rebuilt or impersonated node, in "auth" as a
// key rotation gone wrong, in "refused" or "timeout" as nodes down or a
// firewall. It returns "" for nil.
func FailureClass(err error) string {
	var hk *HostKeyError
	var ne net.Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &hk):
		return FailureHostKey
	// golang.org/x/crypto/ssh has no typed error for a failed
	// authentication; this is its message ("ssh: unable to
	// authenticate, attempted methods [none publickey], no supported
	// methods remain").
	case strings.Contains(err.Error(), "ssh: unable to authenticate"):
		return FailureAuth
	case errors.Is(err, syscall.ECONNREFUSED):
		return FailureRefused
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, ErrKeepalive), errors.Is(err, syscall.ETIMEDOUT),
		errors.As(err, &ne) && ne.Timeout():
		return FailureTimeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return FailureReset
	}
	return FailureOther
}
