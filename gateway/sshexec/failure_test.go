package sshexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/internal/testproxy"
)

func TestFailureClassOfErrors(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{&HostKeyError{Address: "n:22"}, FailureHostKey},
		{fmt.Errorf("dial: %w", &HostKeyError{Address: "n:22"}), FailureHostKey},
		{errors.New("sshexec: handshake with n:22: ssh: handshake failed: ssh: unable to authenticate, attempted methods [none publickey], no supported methods remain"), FailureAuth},
		{fmt.Errorf("sshexec: dial n:22: %w", syscall.ECONNREFUSED), FailureRefused},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), FailureTimeout},
		{fmt.Errorf("x: %w", os.ErrDeadlineExceeded), FailureTimeout},
		{fmt.Errorf("x: %w", ErrKeepalive), FailureTimeout},
		{fmt.Errorf("x: %w", syscall.ECONNRESET), FailureReset},
		{fmt.Errorf("x: %w", io.EOF), FailureReset},
		{errors.New("sftp: permission denied"), FailureOther},
	} {
		if got := FailureClass(tt.err); got != tt.want {
			t.Errorf("FailureClass(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// TestFailureClassOfRealDials classifies what Dial returns when a real
// sshd (or the lack of one) makes it fail in each way.
func TestFailureClassOfRealDials(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	stranger, _ := newEd25519Signer(t)
	for _, tt := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"host key", func(c *Config) { c.HostKeys = HostKeys{Pinned: []ssh.PublicKey{randomPublicKey(t)}} }, FailureHostKey},
		{"auth", func(c *Config) { c.Auth = Auth{Signers: []ssh.Signer{stranger}} }, FailureAuth},
		{"refused", func(c *Config) { c.Address = closedAddr(t) }, FailureRefused},
		{"timeout", func(c *Config) { c.Address = silentServer(t); c.HandshakeTimeout = 100 * time.Millisecond }, FailureTimeout},
		{"reset", func(c *Config) {
			p := testproxy.StartOn(t, s.host, s.addr)
			p.CutAfter(40) // in the client's KEXINIT
			c.Address = p.Addr()
		}, FailureReset},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := s.config()
			cfg.DialRetries = -1
			tt.mutate(&cfg)
			c, err := Dial(context.Background(), cfg)
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			if got := FailureClass(err); got != tt.want {
				t.Errorf("FailureClass(%v) = %q, want %q", err, got, tt.want)
			}
		})
	}
}
