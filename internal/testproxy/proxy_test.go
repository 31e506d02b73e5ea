package testproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// target is a TCP server for the proxy to forward to. It echoes, or, with
// sink set, records what it receives until EOF.
type target struct {
	ln   net.Listener
	sink bool
	wg   sync.WaitGroup

	mu       sync.Mutex // guards received and conns
	received [][]byte   // per connection, filled in when it ends
	conns    []net.Conn
}

func startTarget(t *testing.T, sink bool) *target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{ln: ln, sink: sink}
	tg.wg.Add(1)
	go func() {
		defer tg.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tg.mu.Lock()
			tg.conns = append(tg.conns, c)
			tg.mu.Unlock()
			tg.wg.Add(1)
			go func() {
				defer tg.wg.Done()
				defer c.Close()
				if !tg.sink {
					_, _ = io.Copy(c, c)
					return
				}
				b, _ := io.ReadAll(c)
				tg.mu.Lock()
				tg.received = append(tg.received, b)
				tg.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		tg.mu.Lock()
		for _, c := range tg.conns {
			c.Close()
		}
		tg.mu.Unlock()
		tg.wg.Wait()
	})
	return tg
}

func (tg *target) receivedSoFar() [][]byte {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return append([][]byte(nil), tg.received...)
}

func dial(t *testing.T, p *Proxy) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// roundTrip writes msg and reads the echo, failing after 5 s.
func roundTrip(c net.Conn, msg []byte) ([]byte, error) {
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	got := make([]byte, len(msg))
	_, err := io.ReadFull(c, got)
	return got, err
}

func TestForward(t *testing.T) {
	tg := startTarget(t, false)
	p := Start(t, tg.ln.Addr().String())
	if host, _, _ := net.SplitHostPort(p.Addr()); host != "127.0.0.1" {
		t.Errorf("Addr() = %q, want 127.0.0.1:port", p.Addr())
	}
	c := dial(t, p)
	msg := bytes.Repeat([]byte("outpost "), 50_000) // several chunks
	go func() {
		_, _ = c.Write(msg)
		_ = c.CloseWrite() // the half-close must reach the target
	}()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c) // ends when the target closes after EOF
	if err != nil || !bytes.Equal(got, msg) {
		t.Errorf("echo through proxy: %d bytes, %v; want the %d sent and EOF", len(got), err, len(msg))
	}
}

func TestStartOn(t *testing.T) {
	tg := startTarget(t, false)
	p := StartOn(t, "127.77.0.9", tg.ln.Addr().String())
	if host, _, _ := net.SplitHostPort(p.Addr()); host != "127.77.0.9" {
		t.Errorf("Addr() = %q, want 127.77.0.9:port", p.Addr())
	}
	if got, err := roundTrip(dial(t, p), []byte("hi")); err != nil || string(got) != "hi" {
		t.Errorf("roundTrip = %q, %v", got, err)
	}
}

func TestSetDelay(t *testing.T) {
	tg := startTarget(t, false)
	p := Start(t, tg.ln.Addr().String())
	c := dial(t, p)
	const oneWay = 50 * time.Millisecond
	p.SetDelay(oneWay)
	start := time.Now()
	if _, err := roundTrip(c, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	// A lower bound only: a round trip cannot beat two one-way delays.
	if rtt := time.Since(start); rtt < 2*oneWay {
		t.Errorf("round trip took %v, want at least %v", rtt, 2*oneWay)
	}
	p.SetDelay(0)
	if got, err := roundTrip(c, []byte("pong")); err != nil || string(got) != "pong" {
		t.Errorf("roundTrip after removing the delay = %q, %v", got, err)
	}
}

func TestBlackhole(t *testing.T) {
	tg := startTarget(t, false)
	p := Start(t, tg.ln.Addr().String())
	c := dial(t, p)
	if _, err := roundTrip(c, []byte("before")); err != nil {
		t.Fatal(err)
	}

	p.Blackhole()
	if _, err := c.Write([]byte("lost")); err != nil {
		t.Fatalf("write during blackhole: %v", err)
	}
	// The connection stays open but nothing comes back: the read times out
	// instead of ending.
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	n, err := c.Read(make([]byte, 16))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read during blackhole = %d, %v; want a timeout", n, err)
	}
	// New connections are accepted and black-holed too.
	c2 := dial(t, p)
	_, _ = c2.Write([]byte("x"))
	_ = c2.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c2.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read on a new connection during blackhole = %d, %v; want a timeout", n, err)
	}

	p.Resume()
	if got, err := roundTrip(dial(t, p), []byte("after")); err != nil || string(got) != "after" {
		t.Errorf("roundTrip after Resume = %q, %v", got, err)
	}
}

func TestResetAll(t *testing.T) {
	tg := startTarget(t, false)
	p := Start(t, tg.ln.Addr().String())
	conns := []*net.TCPConn{dial(t, p), dial(t, p)}
	for _, c := range conns {
		if _, err := roundTrip(c, []byte("up")); err != nil {
			t.Fatal(err)
		}
	}
	p.ResetAll()
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("conn %d read after ResetAll: %v, want ECONNRESET", i, err)
		}
	}
	if got, err := roundTrip(dial(t, p), []byte("again")); err != nil || string(got) != "again" {
		t.Errorf("new connection after ResetAll = %q, %v", got, err)
	}
}

func TestCutAfter(t *testing.T) {
	tg := startTarget(t, true)
	p := Start(t, tg.ln.Addr().String())
	other := dial(t, p) // idle bystander, reset by the cut

	const limit = 100_000
	p.CutAfter(limit)
	c := dial(t, p)
	msg := bytes.Repeat([]byte{7}, 1<<20)
	_, werr := c.Write(msg) // may or may not notice the cut
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read after the cut: %v (write: %v), want the connection closed", err, werr)
	}
	_ = other.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := other.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("bystander read after the cut: %v, want ECONNRESET", err)
	}

	// The target saw exactly limit bytes, then EOF.
	var got []byte
	for range 250 {
		for _, r := range tg.receivedSoFar() {
			if len(r) > 0 {
				got = r
			}
		}
		if got != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(got) != limit {
		t.Errorf("target received %d bytes before EOF, want %d", len(got), limit)
	}

	// One-shot: the next connection is forwarded whole.
	c2 := dial(t, p)
	if _, err := c2.Write(msg); err != nil {
		t.Fatalf("write after the cut fired: %v", err)
	}
	c2.CloseWrite()
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.ReadAll(c2) // the sink closes after EOF
	found := false
	for _, r := range tg.receivedSoFar() {
		found = found || len(r) == len(msg)
	}
	if !found {
		t.Errorf("connection after the cut did not deliver all %d bytes", len(msg))
	}
}

func TestClose(t *testing.T) {
	tg := startTarget(t, false)
	p := Start(t, tg.ln.Addr().String())
	c := dial(t, p)
	if _, err := roundTrip(c, []byte("x")); err != nil {
		t.Fatal(err)
	}
	p.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read after Close: %v, want the connection closed", err)
	}
	if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c.Close()
		t.Error("proxy still accepts after Close")
	}
	p.Close() // idempotent; Cleanup calls it again too
}

func TestUnreachableTarget(t *testing.T) {
	// Another IP than the proxy's, so the kernel cannot hand the freed port
	// to the proxy itself.
	ln, err := net.Listen("tcp", "127.66.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p := Start(t, addr)
	// The proxy resets the client as soon as the target refuses, which may
	// be before the client's connect has even returned.
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("dial proxy to a dead target: %v, want success or ECONNRESET", err)
		}
		return
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read through a proxy to a dead target: %v, want the connection closed", err)
	}
}

// BenchmarkDelayedThroughput streams through a proxy with a 5 ms one-way
// delay (10 ms RTT). Chunks are delayed concurrently, so throughput should
// stay far above one chunk per delay (32 KiB / 5 ms = 6.5 MB/s).
func BenchmarkDelayedThroughput(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan int64)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- 0
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		done <- n
	}()
	p := Start(b, ln.Addr().String())
	p.SetDelay(5 * time.Millisecond)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	<-done
	c.Close()
}

// eventually polls cond for up to 5 s: the proxy counts after the kernel
// has already moved the bytes or completed the handshake.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 250 {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("%s: not within 5s", what)
}

func TestAccepted(t *testing.T) {
	tg := startTarget(t, false)
	p := Start(t, tg.ln.Addr().String())
	if got := p.Accepted(); got != 0 {
		t.Errorf("Accepted() = %d before any connection, want 0", got)
	}
	for range 3 {
		if _, err := roundTrip(dial(t, p), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.Accepted(); got != 3 {
		t.Errorf("Accepted() = %d after 3 round trips, want 3", got)
	}

	// Attempts the target refused count too.
	ln, err := net.Listen("tcp", "127.66.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	pd := Start(t, dead)
	for range 2 {
		if c, err := net.DialTimeout("tcp", pd.Addr(), 5*time.Second); err == nil {
			c.Close()
		}
	}
	eventually(t, "Accepted() = 2 with a refusing target", func() bool { return pd.Accepted() == 2 })
}

func TestForwarded(t *testing.T) {
	tg := startTarget(t, false)
	p := Start(t, tg.ln.Addr().String())
	c := dial(t, p)
	msg := bytes.Repeat([]byte("b"), 100_000) // several chunks
	if _, err := roundTrip(c, msg); err != nil {
		t.Fatal(err)
	}
	if _, err := roundTrip(dial(t, p), []byte("123")); err != nil {
		t.Fatal(err)
	}
	want := int64(len(msg) + 3)
	eventually(t, "Forwarded() counts both connections", func() bool {
		up, down := p.Forwarded()
		return up == want && down == want
	})
}
