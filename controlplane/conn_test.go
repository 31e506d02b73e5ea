package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestConnLimitDefaults(t *testing.T) {
	type limits struct {
		maxConns, unauth, perIP, streams int
		timeout                          time.Duration
	}
	tests := []struct {
		name    string
		cfg     Config
		want    limits
		wantErr string
	}{
		{"from a small file limit", Config{FileLimit: 1024}, limits{768, 384, 32, 128, 10 * time.Second}, ""},
		{"from a large file limit", Config{FileLimit: 1 << 20}, limits{1<<20 - ReservedFiles, 1024, 32, 128, 10 * time.Second}, ""},
		{"from the least usable file limit", Config{FileLimit: ReservedFiles + 16}, limits{16, 8, 8, 128, 10 * time.Second}, ""},
		{"explicit values win", Config{FileLimit: 100, MaxConns: 50, MaxUnauthenticatedConns: 40, MaxUnauthenticatedConnsPerIP: 3, MaxStreamsPerConn: 7, HandshakeTimeout: time.Second},
			limits{50, 40, 3, 7, time.Second}, ""},
		{"a file limit too low", Config{FileLimit: 100}, limits{}, "open file limit 100"},
		{"negative MaxConns", Config{FileLimit: 1024, MaxConns: -1}, limits{}, "MaxConns -1"},
		{"negative MaxUnauthenticatedConns", Config{FileLimit: 1024, MaxUnauthenticatedConns: -1}, limits{}, "MaxUnauthenticatedConns -1"},
		{"negative per IP", Config{FileLimit: 1024, MaxUnauthenticatedConnsPerIP: -1}, limits{}, "MaxUnauthenticatedConnsPerIP -1"},
		{"unauthenticated over MaxConns", Config{FileLimit: 1024, MaxConns: 10, MaxUnauthenticatedConns: 11}, limits{}, "MaxUnauthenticatedConns 11 exceeds MaxConns 10"},
		{"per IP over unauthenticated", Config{FileLimit: 1024, MaxUnauthenticatedConns: 10, MaxUnauthenticatedConnsPerIP: 11}, limits{}, "MaxUnauthenticatedConnsPerIP 11 exceeds"},
		{"handshake timeout too short", Config{FileLimit: 1024, HandshakeTimeout: time.Nanosecond}, limits{}, "HandshakeTimeout 1ns"},
		{"handshake timeout too long", Config{FileLimit: 1024, HandshakeTimeout: time.Hour}, limits{}, "HandshakeTimeout 1h0m0s"},
		{"negative handshake timeout", Config{FileLimit: 1024, HandshakeTimeout: -time.Second}, limits{}, "HandshakeTimeout -1s"},
		{"streams over uint32", Config{FileLimit: 1024, MaxStreamsPerConn: 1 << 33}, limits{}, "MaxStreamsPerConn 8589934592"},
		{"negative streams", Config{FileLimit: 1024, MaxStreamsPerConn: -1}, limits{}, "MaxStreamsPerConn -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg
			c.DataDir = t.TempDir()
			err := c.CheckAndSetDefaults()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("CheckAndSetDefaults = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := limits{c.MaxConns, c.MaxUnauthenticatedConns, c.MaxUnauthenticatedConnsPerIP, c.MaxStreamsPerConn, c.HandshakeTimeout}
			if got != tt.want {
				t.Errorf("limits %+v, want %+v", got, tt.want)
			}
		})
	}

	// No FileLimit: the process's own.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	c := Config{DataDir: t.TempDir()}
	if err := c.CheckAndSetDefaults(); lim.Cur >= ReservedFiles+minConns && (err != nil || c.FileLimit != lim.Cur) {
		t.Errorf("CheckAndSetDefaults() = %v, FileLimit %d; want the soft limit %d", err, c.FileLimit, lim.Cur)
	}
}

// TestAPIConnectionLimits floods a running control plane's port from
// several loopback addresses with sockets that say nothing: the ones over
// a source's cap are closed at once, the rest at the handshake deadline,
// while an admin's fresh connection is served.
func TestAPIConnectionLimits(t *testing.T) {
	const perIP, timeout = 4, 500 * time.Millisecond
	s := startCP(t, t.TempDir(), func(c *Config) {
		c.MaxConns, c.MaxUnauthenticatedConns, c.MaxUnauthenticatedConnsPerIP = 64, 16, perIP
		c.HandshakeTimeout = timeout
		c.MetricsListen = "127.0.0.1:0"
	})
	var flood []net.Conn
	for src := 2; src < 6; src++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(src))}, Timeout: waitLimit}
		for range 2 * perIP {
			c, err := d.Dial("tcp", s.Addr())
			if errors.Is(err, syscall.ECONNRESET) {
				continue // refused before the dial returned
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			flood = append(flood, c)
		}
	}

	c := dial(t, s.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := c.ListRollouts(ctx, &outpostv1.ListRolloutsRequest{}); err != nil {
		t.Fatalf("ListRollouts during the flood: %v", err)
	}

	// Every flood socket ends: refused, or at the deadline.
	start := time.Now()
	for _, fc := range flood {
		fc.SetReadDeadline(time.Now().Add(waitLimit))
		if _, err := fc.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("flood connection: read = %v, want it closed by the control plane", err)
		}
	}
	if took := time.Since(start); took > waitLimit/2 {
		t.Errorf("flood connections closed after %v, want about the %v handshake deadline", took, timeout)
	}
	st := s.conns.Stats()
	// Per source, perIP were admitted and perIP refused; the admitted
	// ones timed out, but for any the admin's connection replaced.
	if st.RefusedPerIP != 4*perIP || st.HandshakeTimeouts+st.Evicted != 4*perIP {
		t.Errorf("stats %+v, want %d refused per source and as many handshake timeouts or evictions", st, 4*perIP)
	}
	// The admin's connection authenticated: it is not counted as one
	// that has not, and it still works.
	if st.Open != 1 || st.Unauthenticated != 0 {
		t.Errorf("stats %+v, want only the admin's connection open, authenticated", st)
	}
	if _, err := c.ListRollouts(ctx, &outpostv1.ListRolloutsRequest{}); err != nil {
		t.Errorf("ListRollouts after the flood: %v", err)
	}

	resp, err := http.Get("http://" + s.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		fmt.Sprintf(`outpost_api_connections_closed_total{reason="per_source_limit"} %d`, st.RefusedPerIP),
		fmt.Sprintf(`outpost_api_connections_closed_total{reason="handshake_timeout"} %d`, st.HandshakeTimeouts),
		`outpost_api_connections{state="authenticated"} 1`,
		`outpost_api_connections{state="unauthenticated"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestServerFailsWhenItCannotGoOn breaks what a running control plane
// stands on: Done closes, Err says why, a loud line is logged, and
// Shutdown still works.
func TestServerFailsWhenItCannotGoOn(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(*Server)
		want    string
	}{
		{"the state store stops", func(s *Server) { s.store.Close() }, "state store"},
		{"the listener fails", func(s *Server) { s.conns.Close() }, "serve"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			s := startCP(t, t.TempDir(), func(c *Config) {
				c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			})
			select {
			case <-s.Done():
				t.Fatal("Done closed before anything failed")
			default:
			}
			tt.breakIt(s)
			select {
			case <-s.Done():
			case <-time.After(waitLimit):
				t.Fatalf("Done not closed within %v", waitLimit)
			}
			if err := s.Err(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Err() = %v, want one naming %q", err, tt.want)
			}
			if !strings.Contains(logs.String(), "level=ERROR msg=\"control plane failed") {
				t.Errorf("no loud error line in the log:\n%s", logs.String())
			}
		})
	}
}

func TestShutdownClosesDoneWithoutError(t *testing.T) {
	s := startCP(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed by Shutdown")
	}
	if err := s.Err(); err != nil {
		t.Errorf("Err() after Shutdown = %v, want nil", err)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
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
