package testproxy

import (
	"time"

	"golang.org/x/time/rate"
)

// Limiter caps the bytes per second that the proxies sharing it forward,
// like one network link that their connections share: a token bucket
// whose burst is a few milliseconds' worth (at least one chunk), so a
// write that wakes a little late does not lose the link's throughput.
// Attach it with Proxy.Limit; one Limiter may serve many proxies and both
// directions, or a direction each.
type Limiter struct {
	bucket *rate.Limiter
}

// limiterBurst is how much time's worth of bytes the bucket holds.
const limiterBurst = 5 * time.Millisecond

// NewLimiter returns a limit of bytesPerSecond (> 0).
func NewLimiter(bytesPerSecond int64) *Limiter {
	if bytesPerSecond <= 0 {
		panic("testproxy: NewLimiter needs a positive rate")
	}
	burst := max(int64(chunkSize), bytesPerSecond*int64(limiterBurst)/int64(time.Second))
	return &Limiter{bucket: rate.NewLimiter(rate.Limit(bytesPerSecond), int(burst))}
}

// Limit makes the proxy forward client->server bytes within toTarget and
// server->client bytes within toClient, for data written from now on;
// nil lifts a direction's limit. Pass the same Limiter to several proxies
// to share one budget between them.
func (p *Proxy) Limit(toTarget, toClient *Limiter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.limitToTarget, p.limitToClient = toTarget, toClient
}

func (p *Proxy) limiter(toServer bool) *Limiter {
	p.mu.Lock()
	defer p.mu.Unlock()
	if toServer {
		return p.limitToTarget
	}
	return p.limitToClient
}

// wait blocks until n bytes may pass, or done closes (false).
func (l *Limiter) wait(n int, done <-chan struct{}) bool {
	if l == nil {
		return true
	}
	r := l.bucket.ReserveN(time.Now(), n) // n <= chunkSize <= burst: always ok
	d := r.Delay()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		r.Cancel()
		return false
	}
}
