package sshexec

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/outposthq/outpost/internal/testproxy"
)

// TestKeepaliveBlackhole cuts the network path silently in the middle of a
// Run and an Upload: both must fail, naming the keepalive, once
// KeepaliveMaxMissed probes went unanswered, instead of hanging.
func TestKeepaliveBlackhole(t *testing.T) {
	s := startSSHD(t, sshdOptions{})
	p := testproxy.StartOn(t, s.host, s.addr)
	cfg := s.config()
	cfg.Address = p.Addr()
	cfg.KeepaliveInterval = 200 * time.Millisecond
	cfg.KeepaliveMaxMissed = 3
	c := dial(t, cfg)

	// Healthy: a command longer than several intervals is not disturbed.
	if r, err := c.Run(context.Background(), "sleep 1; echo done"); err != nil || string(r.Stdout) != "done\n" {
		t.Fatalf("Run on a healthy path = %+v, %v", r, err)
	}

	pidFile := filepath.Join(t.TempDir(), "pid")
	runErr := make(chan error, 1)
	go func() {
		_, err := c.Run(context.Background(), "echo $$ > "+pidFile+"; exec sleep 20")
		runErr <- err
	}()
	upErr := make(chan error, 1)
	src := &endlessReader{}
	go func() {
		_, err := c.Upload(context.Background(), src, filepath.Join(t.TempDir(), "f"), 0o600)
		upErr <- err
	}()
	pid := waitForPID(t, pidFile)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	for i := 0; src.n.Load() == 0; i++ {
		if i == 1000 {
			t.Fatal("upload did not start within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	p.Blackhole()
	start := time.Now()
	// Detection takes at most one interval to send the first unanswered
	// probe plus KeepaliveMaxMissed intervals; the bound adds slack for a
	// loaded machine.
	want := cfg.KeepaliveInterval * time.Duration(cfg.KeepaliveMaxMissed+1)
	limit := 3*want + 2*time.Second
	for name, errc := range map[string]chan error{"Run": runErr, "Upload": upErr} {
		select {
		case err := <-errc:
			t.Logf("%s: %v", name, err)
			if !errors.Is(err, ErrKeepalive) || !strings.Contains(err.Error(), "keepalive") {
				t.Errorf("%s on a blackholed path = %v, want an error wrapping ErrKeepalive", name, err)
			}
		case <-time.After(limit - time.Since(start)):
			t.Fatalf("%s still blocked %v after the path went silent", name, time.Since(start))
		}
	}
	t.Logf("calls failed %v after the path went silent (interval %v, max missed %d)",
		time.Since(start), cfg.KeepaliveInterval, cfg.KeepaliveMaxMissed)

	// The Client stays closed for business, and says why.
	if _, err := c.Run(context.Background(), "true"); !errors.Is(err, ErrKeepalive) {
		t.Errorf("Run after keepalive failure = %v, want ErrKeepalive", err)
	}
}

func TestDialHonorsContext(t *testing.T) {
	addr := silentServer(t)
	cfg := Config{
		Address:          addr,
		User:             "deploy",
		Auth:             Auth{Password: "pw"},
		HostKeys:         HostKeys{Pinned: []ssh.PublicKey{randomPublicKey(t)}},
		HandshakeTimeout: time.Minute,
	}

	t.Run("ctx", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := Dial(ctx, cfg)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Dial = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Dial returned %v after the ctx ended", d)
		}
	})
	t.Run("handshake timeout", func(t *testing.T) {
		cfg := cfg
		cfg.HandshakeTimeout = 200 * time.Millisecond
		_, err := Dial(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "no answer within 200ms") {
			t.Fatalf("Dial = %v, want a handshake timeout", err)
		}
	})
	t.Run("nothing listening", func(t *testing.T) {
		cfg := cfg
		host, port := randomLoopback()
		cfg.Address = net.JoinHostPort(host, strconv.Itoa(port))
		_, err := Dial(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "dial") {
			t.Fatalf("Dial = %v, want a dial error", err)
		}
	})
}
