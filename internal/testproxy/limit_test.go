package testproxy

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"
)

// TestLimitShared sends through two proxies that share one Limiter: the
// data arrives whole, and not sooner than the shared rate allows. (A token
// bucket never runs ahead of its rate, so the lower bound holds on a slow
// machine too; no upper bound is checked.)
func TestLimitShared(t *testing.T) {
	const (
		rate = 4 << 20 // bytes per second, shared
		each = 2 << 20 // bytes sent through each proxy
	)
	lim := NewLimiter(rate)
	tg := startTarget(t, true)
	var proxies []*Proxy
	for range 2 {
		p := Start(t, tg.ln.Addr().String())
		p.Limit(lim, nil)
		proxies = append(proxies, p)
	}
	msg := bytes.Repeat([]byte("limited "), each/8)
	start := time.Now()
	var wg sync.WaitGroup
	for _, p := range proxies {
		c := dial(t, p)
		wg.Go(func() {
			_, _ = c.Write(msg)
			_ = c.CloseWrite()
			_, _ = io.Copy(io.Discard, c) // until the target closes
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	eventually(t, "the target received both streams", func() bool { return len(tg.receivedSoFar()) == 2 })
	for i, got := range tg.receivedSoFar() {
		if !bytes.Equal(got, msg) {
			t.Errorf("stream %d: received %d bytes, want the %d sent", i, len(got), len(msg))
		}
	}
	// The bucket starts full: one burst passes at once, the rest at rate.
	burst := float64(lim.bucket.Burst())
	floor := time.Duration((2*each - burst) / rate * float64(time.Second))
	if elapsed < floor {
		t.Errorf("2 × %d bytes through a shared %d B/s limit took %v, want at least %v", each, rate, elapsed, floor)
	}
	var up int64
	for _, p := range proxies {
		n, _ := p.Forwarded()
		up += n
	}
	if up != 2*each {
		t.Errorf("Forwarded() to the target: %d, want %d", up, 2*each)
	}
}

// TestLimitLifted: Limit(nil, nil) removes the limit, and a proxy closes
// promptly while a limited write waits.
func TestLimitLifted(t *testing.T) {
	tg := startTarget(t, false)
	p := Start(t, tg.ln.Addr().String())
	p.Limit(NewLimiter(1), NewLimiter(1)) // far below one chunk a second
	p.Limit(nil, nil)
	msg := bytes.Repeat([]byte("x"), 100_000)
	if got, err := roundTrip(dial(t, p), msg); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("round trip without a limit: %v (%d bytes back)", err, len(got))
	}

	slow := Start(t, tg.ln.Addr().String())
	slow.Limit(NewLimiter(1), nil)
	c := dial(t, slow)
	if _, err := c.Write(bytes.Repeat([]byte("y"), 3*chunkSize)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the first chunk passes (the burst)", func() bool { n, _ := slow.Forwarded(); return n > 0 })
	done := make(chan struct{})
	go func() { slow.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while a limited write waited")
	}
}

func TestNewLimiterBurst(t *testing.T) {
	if b := NewLimiter(1).bucket.Burst(); b != chunkSize {
		t.Errorf("burst at 1 B/s = %d, want one chunk (%d)", b, chunkSize)
	}
	if b := NewLimiter(125_000_000).bucket.Burst(); b != 625_000 {
		t.Errorf("burst at 1 Gbit/s = %d, want 5 ms worth (625000)", b)
	}
}
