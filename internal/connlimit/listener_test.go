package connlimit

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/outposthq/outpost/internal/pki"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLimit bounds every wait: far more than loopback needs, far less
// than the go test timeout.
const waitLimit = 10 * time.Second

// server is a Listener on loopback with an accept loop that hands the
// admitted connections to the test.
type server struct {
	l        *Listener
	accepted chan net.Conn
	done     chan struct{}
}

func listen(t *testing.T, cfg Config) *server {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewListener(inner, cfg)
	if err != nil {
		inner.Close()
		t.Fatal(err)
	}
	s := &server{l: l, accepted: make(chan net.Conn, 1000), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.accepted <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-s.done
		close(s.accepted)
		for c := range s.accepted {
			c.Close()
		}
	})
	return s
}

// next returns the next admitted connection.
func (s *server) next(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-s.accepted:
		return c
	case <-time.After(waitLimit):
		t.Fatalf("no connection admitted within %v; stats %+v", waitLimit, s.l.Stats())
		return nil
	}
}

// dialFrom connects to addr from the loopback address src.
func dialFrom(t *testing.T, addr net.Addr, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: waitLimit}
	c, err := d.Dial("tcp", addr.String())
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// refusedFrom dials addr from src and waits until the server closed the
// connection; on loopback the reset may even reach the dial.
func refusedFrom(t *testing.T, addr net.Addr, src, what string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: waitLimit}
	c, err := d.Dial("tcp", addr.String())
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatalf("%s: dial from %s: %v", what, src, err)
	}
	defer c.Close()
	waitClosed(t, c, what)
}

// waitClosed waits until the server closed c: a read ends with EOF or a
// reset, not with the read deadline.
func waitClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: read = %v, want the connection closed by the server", what, err)
	}
}

// longTimeout keeps the handshake deadline out of tests about counts.
const longTimeout = time.Hour

func TestRefusesOverPerSourceLimit(t *testing.T) {
	s := listen(t, Config{MaxConns: 100, MaxUnauthenticated: 10, MaxUnauthenticatedPerIP: 2, HandshakeTimeout: longTimeout, Logger: discard()})
	addr := s.l.Addr()
	a1, a2 := dialFrom(t, addr, "127.0.0.2"), dialFrom(t, addr, "127.0.0.2")
	s1, s2 := s.next(t), s.next(t)
	refusedFrom(t, addr, "127.0.0.2", "third connection from 127.0.0.2")
	// Another source is not affected.
	dialFrom(t, addr, "127.0.0.3")
	s.next(t)
	if st := s.l.Stats(); st.RefusedPerIP != 1 || st.Open != 3 || st.Unauthenticated != 3 || st.Evicted != 0 {
		t.Errorf("stats %+v, want 1 refused per source, 3 open and unauthenticated, none evicted", st)
	}

	// An authenticated connection leaves its source's count; a closed one
	// too.
	Handshaken(s1, true)
	dialFrom(t, addr, "127.0.0.2")
	s3 := s.next(t)
	s2.Close()
	dialFrom(t, addr, "127.0.0.2")
	s.next(t)
	if st := s.l.Stats(); st.RefusedPerIP != 1 || st.Open != 4 || st.Unauthenticated != 3 {
		t.Errorf("stats %+v, want still 1 refused, 4 open, 3 unauthenticated", st)
	}
	// The client ends of the admitted connections are open.
	for _, c := range []net.Conn{a1, a2} {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Errorf("write on an admitted connection: %v", err)
		}
	}
	s3.Close()
}

func TestEvictsOldestUnauthenticatedWhenFull(t *testing.T) {
	s := listen(t, Config{MaxConns: 100, MaxUnauthenticated: 3, MaxUnauthenticatedPerIP: 3, HandshakeTimeout: longTimeout, Logger: discard()})
	addr := s.l.Addr()
	var clients []net.Conn
	for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		clients = append(clients, dialFrom(t, addr, src))
		s.next(t)
	}
	// A fourth, from a fifth source: the oldest makes room.
	dialFrom(t, addr, "127.0.0.5")
	s.next(t)
	waitClosed(t, clients[0], "oldest unauthenticated connection")
	if st := s.l.Stats(); st.Evicted != 1 || st.Open != 3 || st.Unauthenticated != 3 || st.RefusedFull != 0 {
		t.Errorf("stats %+v, want 1 evicted, 3 open and unauthenticated", st)
	}
	// The evicted one's source has room again.
	dialFrom(t, addr, "127.0.0.2")
	s.next(t)
	waitClosed(t, clients[1], "second oldest")
}

// TestEvictsHandshakingBeforeCertless: a connection past its handshake
// without a certificate (a gateway joining) is evicted only when no
// connection is still in its handshake.
func TestEvictsHandshakingBeforeCertless(t *testing.T) {
	s := listen(t, Config{MaxConns: 100, MaxUnauthenticated: 2, MaxUnauthenticatedPerIP: 2, HandshakeTimeout: longTimeout, Logger: discard()})
	addr := s.l.Addr()
	joining := dialFrom(t, addr, "127.0.0.2")
	Handshaken(s.next(t), false)
	handshaking := dialFrom(t, addr, "127.0.0.3")
	s.next(t)
	dialFrom(t, addr, "127.0.0.4")
	newer := s.next(t)
	waitClosed(t, handshaking, "the connection still in its handshake")
	// One eviction so far, the socket above: the older certless one stays.
	if st := s.l.Stats(); st.Evicted != 1 {
		t.Fatalf("stats %+v, want 1 evicted", st)
	}
	// Once every unauthenticated connection is past its handshake, the
	// oldest goes.
	Handshaken(newer, false)
	dialFrom(t, addr, "127.0.0.5")
	s.next(t)
	waitClosed(t, joining, "the oldest certless connection")
	if st := s.l.Stats(); st.Evicted != 2 || st.Open != 2 || st.Unauthenticated != 2 {
		t.Errorf("stats %+v, want 2 evicted, 2 open and unauthenticated", st)
	}
}

func TestAuthenticatedConnectionsAreNeverEvicted(t *testing.T) {
	s := listen(t, Config{MaxConns: 2, MaxUnauthenticated: 2, MaxUnauthenticatedPerIP: 2, HandshakeTimeout: longTimeout, Logger: discard()})
	addr := s.l.Addr()
	var admitted []net.Conn
	for _, src := range []string{"127.0.0.2", "127.0.0.3"} {
		dialFrom(t, addr, src)
		c := s.next(t)
		Handshaken(c, true)
		admitted = append(admitted, c)
	}
	refusedFrom(t, addr, "127.0.0.4", "connection over MaxConns")
	if st := s.l.Stats(); st.RefusedFull != 1 || st.Open != 2 || st.Unauthenticated != 0 || st.Evicted != 0 {
		t.Errorf("stats %+v, want 1 refused for a full table, 2 open, none unauthenticated", st)
	}
	// Closing one (twice, as servers may) frees exactly one place.
	admitted[0].Close()
	admitted[0].Close()
	dialFrom(t, addr, "127.0.0.4")
	s.next(t)
	if st := s.l.Stats(); st.Open != 2 || st.Unauthenticated != 1 {
		t.Errorf("stats %+v, want 2 open, 1 unauthenticated", st)
	}
}

// TestHandshakeDeadline runs a real gRPC server over TLS on a Listener:
// sockets that stay silent or send half a ClientHello are closed at the
// deadline; clients that finished the handshake stay, with or without a
// certificate, and only the one with a certificate is authenticated.
func TestHandshakeDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ca, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := listenGRPC(t, Config{MaxConns: 100, MaxUnauthenticated: 10, MaxUnauthenticatedPerIP: 10, HandshakeTimeout: timeout, Logger: discard()},
		pki.ServerTLSConfig(ca, serverCert))
	addr := s.Addr()

	withCert := dialGRPC(t, addr.String(), pki.ClientTLSConfig(clientCred(t, ca), ""))
	noCertTLS, err := pki.ClientTLSConfigForCA(ca.CertPEM(), "")
	if err != nil {
		t.Fatal(err)
	}
	noCert := dialGRPC(t, addr.String(), noCertTLS)

	silent := dialFrom(t, addr, "127.0.0.2")
	partial := dialFrom(t, addr, "127.0.0.3")
	// A TLS record header announcing a 512-byte ClientHello, then only its
	// first bytes.
	if _, err := partial.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitClosed(t, silent, "silent connection")
	waitClosed(t, partial, "partial ClientHello")
	if took := time.Since(start); took < timeout/2 {
		t.Errorf("closed after %v, before the %v deadline", took, timeout)
	}

	// Both gRPC connections are older than the two closed ones, so their
	// deadlines passed too: they still answer, on the same connections.
	for name, cc := range map[string]*grpc.ClientConn{"with a certificate": withCert, "without": noCert} {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Errorf("health check %s: %v", name, err)
		}
		cancel()
	}
	if st := s.l.Stats(); st.HandshakeTimeouts != 2 || st.Open != 2 || st.Unauthenticated != 1 || st.Evicted != 0 {
		t.Errorf("stats %+v, want 2 handshake timeouts and 2 open connections, 1 of them unauthenticated", st)
	}
}

// grpcServer is a gRPC health server on a Listener.
type grpcServer struct {
	l *Listener
}

func (s *grpcServer) Addr() net.Addr { return s.l.Addr() }

func listenGRPC(t *testing.T, cfg Config, tlsCfg *tls.Config) *grpcServer {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewListener(inner, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// gRPC's own handshake deadline stays at its default (2 minutes): the
	// Listener's is under test.
	srv := grpc.NewServer(grpc.Creds(Credentials(credentials.NewTLS(tlsCfg))))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return &grpcServer{l: l}
}

// dialGRPC connects a gRPC client and waits until a call went through.
func dialGRPC(t *testing.T, addr string, tlsCfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check: %v", err)
	}
	return cc
}

func clientCred(t *testing.T, ca *pki.CA) *pki.Credential {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.IssueClient(pki.Identity{Kind: pki.KindUser, Name: "alice", Role: pki.RoleAdmin}, key.Public(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := pki.NewCredential(ca.CertPEM(), certPEM, key, "")
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

// TestConcurrentFlood dials from several sources at once, far over every
// limit, then closes everything: the counts never exceed the limits and
// return to zero.
func TestConcurrentFlood(t *testing.T) {
	cfg := Config{MaxConns: 40, MaxUnauthenticated: 20, MaxUnauthenticatedPerIP: 5, HandshakeTimeout: longTimeout, Logger: discard()}
	s := listen(t, cfg)
	addr := s.l.Addr()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var clients []net.Conn
	const sources, perSource = 8, 25
	const dials = sources * perSource
	for src := 2; src < 2+sources; src++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(src))}, Timeout: waitLimit}
			for range perSource {
				c, err := d.Dial("tcp", addr.String())
				if err != nil {
					// Refused or evicted before the dial returned.
					if !errors.Is(err, syscall.ECONNRESET) {
						t.Errorf("dial: %v", err)
					}
					continue
				}
				mu.Lock()
				clients = append(clients, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// Every connection dialled gets a verdict: admitted (and perhaps
	// evicted later) or refused.
	var admitted []net.Conn
	deadline := time.Now().Add(waitLimit)
	for {
		st := s.l.Stats()
		if st.Open > cfg.MaxConns || st.Unauthenticated > cfg.MaxUnauthenticated {
			t.Fatalf("stats %+v over the limits", st)
		}
		if len(admitted)+int(st.RefusedPerIP+st.RefusedFull) == dials {
			break
		}
		select {
		case c := <-s.accepted:
			admitted = append(admitted, c)
		case <-time.After(10 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatalf("%d admitted and stats %+v for %d connections dialled", len(admitted), st, dials)
			}
		}
	}
	st := s.l.Stats()
	if st.Unauthenticated != cfg.MaxUnauthenticated || st.Open != cfg.MaxUnauthenticated {
		t.Errorf("stats %+v after the flood, want the table full at %d", st, cfg.MaxUnauthenticated)
	}
	if st.RefusedPerIP == 0 || st.Evicted == 0 {
		t.Errorf("stats %+v, want refusals per source and evictions", st)
	}
	for _, c := range admitted {
		c.Close()
	}
	for _, c := range clients {
		c.Close()
	}
	if st := s.l.Stats(); st.Open != 0 || st.Unauthenticated != 0 {
		t.Errorf("stats %+v after closing everything, want 0 open", st)
	}
	s.l.mu.Lock()
	if len(s.l.perIP) != 0 {
		t.Errorf("per-source counts %v after closing everything, want none", s.l.perIP)
	}
	s.l.mu.Unlock()
}

func TestLogsAtMostOncePerInterval(t *testing.T) {
	var buf syncBuffer
	now := time.Unix(1_000_000, 0)
	var clockMu sync.Mutex
	clock := func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		return now
	}
	s := listen(t, Config{MaxConns: 10, MaxUnauthenticated: 1, MaxUnauthenticatedPerIP: 1, HandshakeTimeout: longTimeout,
		Logger: slog.New(slog.NewTextHandler(&buf, nil)), LogInterval: time.Minute, Now: clock})
	addr := s.l.Addr()
	dialFrom(t, addr, "127.0.0.2")
	s.next(t)
	for range 5 {
		refusedFrom(t, addr, "127.0.0.2", "connection over the per-source limit")
	}
	if n := strings.Count(buf.String(), "closing connections"); n != 1 {
		t.Fatalf("%d log lines for 5 refusals within the interval, want 1:\n%s", n, buf.String())
	}
	clockMu.Lock()
	now = now.Add(time.Minute)
	clockMu.Unlock()
	refusedFrom(t, addr, "127.0.0.2", "connection over the per-source limit")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "refused_per_source=5") || !strings.Contains(lines[1], "last_source=127.0.0.2") {
		t.Errorf("after the interval, want a second line counting the 5 refusals since the first:\n%s", buf.String())
	}
}

func TestSourceOf(t *testing.T) {
	tests := []struct {
		addr string
		want string
	}{
		{"192.0.2.7:443", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:443", "192.0.2.7"},
		{"[2001:db8:1:2:aaaa::1]:443", "2001:db8:1:2::"},
		{"[2001:db8:1:2:bbbb::9]:443", "2001:db8:1:2::"},
		{"[2001:db8:1:3::1]:443", "2001:db8:1:3::"},
	}
	for _, tt := range tests {
		a, err := net.ResolveTCPAddr("tcp", tt.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := sourceOf(a); got != netip.MustParseAddr(tt.want) {
			t.Errorf("sourceOf(%s) = %v, want %s", tt.addr, got, tt.want)
		}
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	ok := Config{MaxConns: 10, MaxUnauthenticated: 5, MaxUnauthenticatedPerIP: 2, HandshakeTimeout: time.Second}
	tests := []struct {
		change func(*Config)
		want   string
	}{
		{func(c *Config) { c.MaxConns = 0 }, "MaxConns"},
		{func(c *Config) { c.MaxConns = -1 }, "MaxConns"},
		{func(c *Config) { c.MaxUnauthenticated = 11 }, "MaxUnauthenticated 11"},
		{func(c *Config) { c.MaxUnauthenticated = 0 }, "MaxUnauthenticated 0"},
		{func(c *Config) { c.MaxUnauthenticatedPerIP = 6 }, "MaxUnauthenticatedPerIP"},
		{func(c *Config) { c.MaxUnauthenticatedPerIP = -3 }, "MaxUnauthenticatedPerIP"},
		{func(c *Config) { c.HandshakeTimeout = 0 }, "HandshakeTimeout"},
		{func(c *Config) { c.LogInterval = -time.Second }, "LogInterval"},
	}
	for _, tt := range tests {
		c := ok
		tt.change(&c)
		err := c.CheckAndSetDefaults()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("CheckAndSetDefaults(%+v) = %v, want an error naming %s", c, err, tt.want)
		}
	}
	c := ok
	if err := c.CheckAndSetDefaults(); err != nil || c.LogInterval != DefaultLogInterval || c.Logger == nil || c.Now == nil {
		t.Errorf("CheckAndSetDefaults(valid) = %v, config %+v; want defaults filled in", err, c)
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

// discard logs to standard error at error level only: the tests cause
// refusals on purpose.
func discard() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}
