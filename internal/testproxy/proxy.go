package testproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	chunkSize = 32 << 10
	// queueChunks bounds the data in flight per direction (2 MiB), enough
	// for a 10 ms round trip at several hundred MB/s.
	queueChunks = 64
	dialTimeout = 5 * time.Second
	// drainTimeout bounds how long a cut connection waits for the target to
	// close its side after the FIN, so the forwarded bytes are not lost to
	// a reset.
	drainTimeout = 2 * time.Second
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// Proxy forwards TCP connections from Addr to a target.
type Proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup // accept loop and every connection goroutine

	accepted atomic.Int64 // connections accepted
	toTarget atomic.Int64 // bytes written to the target
	toClient atomic.Int64 // bytes written to clients

	mu        sync.Mutex // guards the fields below
	conns     map[*conn]struct{}
	delay     time.Duration
	blackhole bool
	cutArmed  bool
	cutLeft   int64 // client->server bytes still allowed while cutArmed
	closed    bool
	// limitToTarget and limitToClient cap each direction (limit.go).
	limitToTarget, limitToClient *Limiter
}

// Start starts a proxy on 127.0.0.1 with a kernel-chosen port, forwarding
// to target. It is closed on tb.Cleanup.
func Start(tb testing.TB, target string) *Proxy {
	tb.Helper()
	return StartOn(tb, "127.0.0.1", target)
}

// StartOn is Start listening on listen, a loopback IP ("127.5.6.7", any
// port) or ip:port.
func StartOn(tb testing.TB, listen, target string) *Proxy {
	tb.Helper()
	addr := listen
	if _, _, err := net.SplitHostPort(listen); err != nil {
		addr = net.JoinHostPort(listen, "0")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatalf("testproxy: listen on %s: %v", addr, err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[*conn]struct{}{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.acceptLoop()
	}()
	tb.Cleanup(p.Close)
	return p
}

// Addr is the proxy's listening address, ip:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Accepted returns how many connections the proxy has accepted, that is
// how many attempts clients made through it, including those it reset
// because the target refused.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Forwarded returns the bytes forwarded so far from clients to the target
// and from the target to clients, across all connections. Data dropped by
// Blackhole or a cut is not counted.
func (p *Proxy) Forwarded() (toTarget, toClient int64) {
	return p.toTarget.Load(), p.toClient.Load()
}

// SetDelay adds oneWay latency to each direction of every connection, for
// data read from now on. Zero removes the delay.
func (p *Proxy) SetDelay(oneWay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = max(oneWay, 0)
}

// Blackhole stops forwarding in both directions, dropping data, while
// keeping connections open and accepting new ones, like a network path
// that silently died. Resume ends it; streams that lost data stay broken.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackhole = true
}

// Resume forwards again after Blackhole.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackhole = false
}

// ResetAll closes every current connection at once with a TCP reset on
// both sides. New connections are forwarded as before.
func (p *Proxy) ResetAll() {
	for _, c := range p.snapshot() {
		c.abort()
	}
}

// CutAfter arms a one-shot cut: once n more client->server bytes have been
// forwarded (across all connections), the connection carrying the n-th
// byte ends — the client gets a reset, the target gets exactly those bytes
// and then EOF — and every other open connection is reset. Later
// connections are forwarded normally. n <= 0 disarms.
func (p *Proxy) CutAfter(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutArmed, p.cutLeft = n > 0, n
}

// Close stops the proxy, resets its connections and waits for its
// goroutines. It is safe to call more than once.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.ResetAll()
	p.wg.Wait()
}

func (p *Proxy) snapshot() []*conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		cs = append(cs, c)
	}
	return cs
}

func (p *Proxy) currentDelay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay
}

func (p *Proxy) blackholed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blackhole
}

// consume takes n client->server bytes from the cut budget and returns how
// many may be forwarded and whether the cut fires now.
func (p *Proxy) consume(n int) (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.cutArmed {
		return n, false
	}
	if int64(n) < p.cutLeft {
		p.cutLeft -= int64(n)
		return n, false
	}
	allowed := int(p.cutLeft)
	p.cutArmed, p.cutLeft = false, 0
	return allowed, true
}

func (p *Proxy) acceptLoop() {
	// Pending dials to the target end with the loop, that is on Close.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. out of descriptors
			continue
		}
		p.accepted.Add(1)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.connect(ctx, client.(*net.TCPConn))
		}()
	}
}

// connect dials the target for client and starts forwarding.
func (p *Proxy) connect(ctx context.Context, client *net.TCPConn) {
	d := net.Dialer{Timeout: dialTimeout}
	sc, err := d.DialContext(ctx, "tcp", p.target)
	if err != nil {
		_ = client.SetLinger(0)
		_ = client.Close()
		return
	}
	c := &conn{p: p, client: client, server: sc.(*net.TCPConn), done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.abort()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()

	c.live.Store(4)
	c2s := make(chan chunk, queueChunks)
	s2c := make(chan chunk, queueChunks)
	for _, f := range []func(){
		func() { c.read(c.client, c2s) },
		func() { c.write(c.server, c2s, true) },
		func() { c.read(c.server, s2c) },
		func() { c.write(c.client, s2c, false) },
	} {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer c.exit()
			f()
		}()
	}
}

// chunk is data read from one side, to be written to the other at due.
type chunk struct {
	buf *[]byte // from bufPool; nil for EOF
	n   int
	due time.Time
	eof bool
}

// conn is one proxied connection: a reader and a writer per direction.
type conn struct {
	p              *Proxy
	client, server *net.TCPConn
	done           chan struct{} // closed by abort
	abortOnce      sync.Once
	cutting        atomic.Bool  // this connection carries the cut; errors are expected
	live           atomic.Int32 // goroutines still running; the last one cleans up
}

// abort resets both sides.
func (c *conn) abort() {
	c.abortOnce.Do(func() {
		close(c.done)
		_ = c.client.SetLinger(0)
		_ = c.server.SetLinger(0)
		_ = c.client.Close()
		_ = c.server.Close()
	})
}

// exit runs as each goroutine ends; the last closes the sockets (a no-op
// after abort) and forgets the connection.
func (c *conn) exit() {
	if c.live.Add(-1) > 0 {
		return
	}
	_ = c.client.Close()
	_ = c.server.Close()
	c.p.mu.Lock()
	delete(c.p.conns, c)
	c.p.mu.Unlock()
}

// read moves data from src into q, stamped with its release time, until
// src ends. A clean EOF is passed on as a half-close; any other error
// resets the connection, as a real network would.
func (c *conn) read(src *net.TCPConn, q chan<- chunk) {
	defer close(q)
	for {
		buf := bufPool.Get().(*[]byte)
		n, err := src.Read(*buf)
		if n > 0 {
			select {
			case q <- chunk{buf: buf, n: n, due: time.Now().Add(c.p.currentDelay())}:
			case <-c.done:
				bufPool.Put(buf)
				return
			}
		} else {
			bufPool.Put(buf)
		}
		if err == nil {
			continue
		}
		switch {
		case c.cutting.Load():
		case errors.Is(err, io.EOF):
			select {
			case q <- chunk{eof: true, due: time.Now().Add(c.p.currentDelay())}:
			case <-c.done:
			}
		default:
			c.abort()
		}
		return
	}
}

// write releases chunks from q to dst when they are due. toServer marks the
// client->server direction, which the cut budget counts.
func (c *conn) write(dst *net.TCPConn, q <-chan chunk, toServer bool) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	failed := false // dst is gone: keep draining q so the reader can finish
	for ch := range q {
		if wait := time.Until(ch.due); wait > 0 && !failed {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-c.done:
				if ch.buf != nil {
					bufPool.Put(ch.buf)
				}
				return
			}
		}
		if ch.eof {
			if !failed && !c.p.blackholed() {
				_ = dst.CloseWrite()
			}
			continue
		}
		data := (*ch.buf)[:ch.n]
		if !failed && !c.p.limiter(toServer).wait(len(data), c.done) {
			bufPool.Put(ch.buf)
			return
		}
		if !failed && !c.p.blackholed() {
			cut := false
			if toServer {
				var n int
				n, cut = c.p.consume(len(data))
				data = data[:n]
			}
			n, err := dst.Write(data)
			if toServer {
				c.p.toTarget.Add(int64(n))
			} else {
				c.p.toClient.Add(int64(n))
			}
			if err != nil {
				failed = true
			}
			if cut {
				c.cut()
				failed = true
			}
		}
		bufPool.Put(ch.buf)
	}
}

// cut ends this connection after the budgeted bytes reached the target
// and resets every other one.
func (c *conn) cut() {
	c.cutting.Store(true)
	_ = c.client.SetLinger(0)
	_ = c.client.Close()
	// FIN after the last forwarded byte; the server->client reader drains
	// until the target closes too, so nothing unread turns the close into
	// a reset that could drop those bytes.
	_ = c.server.CloseWrite()
	_ = c.server.SetReadDeadline(time.Now().Add(drainTimeout))
	for _, o := range c.p.snapshot() {
		if o != c {
			o.abort()
		}
	}
}
