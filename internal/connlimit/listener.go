package connlimit

import (
	"container/list"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// DefaultLogInterval is how often refusals are logged at most.
const DefaultLogInterval = 10 * time.Second

// Config bounds a Listener.
type Config struct {
	// MaxConns bounds the connections open at once, authenticated or not.
	// Required.
	MaxConns int
	// MaxUnauthenticated bounds the open connections that have not
	// authenticated (see the package doc). Required, at most MaxConns.
	MaxUnauthenticated int
	// MaxUnauthenticatedPerIP bounds those of one source address (an IPv6
	// /64 counts as one). Required, at most MaxUnauthenticated.
	MaxUnauthenticatedPerIP int
	// HandshakeTimeout is how long a connection may take, from accept, to
	// finish its handshake before it is closed. Required.
	HandshakeTimeout time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// LogInterval is the least time between two log lines about refused
	// or closed connections; 0 means DefaultLogInterval.
	LogInterval time.Duration
	// Now is the clock of the log rate limit; nil means time.Now.
	Now func() time.Time
}

// CheckAndSetDefaults validates the config and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	switch {
	case c.MaxConns <= 0:
		return fmt.Errorf("connlimit: MaxConns %d must be positive", c.MaxConns)
	case c.MaxUnauthenticated <= 0 || c.MaxUnauthenticated > c.MaxConns:
		return fmt.Errorf("connlimit: MaxUnauthenticated %d must be between 1 and MaxConns (%d)", c.MaxUnauthenticated, c.MaxConns)
	case c.MaxUnauthenticatedPerIP <= 0 || c.MaxUnauthenticatedPerIP > c.MaxUnauthenticated:
		return fmt.Errorf("connlimit: MaxUnauthenticatedPerIP %d must be between 1 and MaxUnauthenticated (%d)", c.MaxUnauthenticatedPerIP, c.MaxUnauthenticated)
	case c.HandshakeTimeout <= 0:
		return fmt.Errorf("connlimit: HandshakeTimeout %v must be positive", c.HandshakeTimeout)
	case c.LogInterval < 0:
		return fmt.Errorf("connlimit: negative LogInterval %v", c.LogInterval)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.LogInterval == 0 {
		c.LogInterval = DefaultLogInterval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Stats are a Listener's gauges and counters.
type Stats struct {
	// Open and Unauthenticated count the connections open now.
	Open, Unauthenticated int
	// RefusedPerIP counts new connections closed because their source
	// had MaxUnauthenticatedPerIP unauthenticated ones open.
	RefusedPerIP uint64
	// RefusedFull counts new connections closed because MaxConns were
	// open, all of them authenticated.
	RefusedFull uint64
	// Evicted counts unauthenticated connections closed to make room for
	// a new one.
	Evicted uint64
	// HandshakeTimeouts counts connections closed because their handshake
	// had not finished within HandshakeTimeout.
	HandshakeTimeouts uint64
}

// closedTotal is how many connections the limits closed.
func (s Stats) closedTotal() uint64 {
	return s.RefusedPerIP + s.RefusedFull + s.Evicted + s.HandshakeTimeouts
}

// Listener is a net.Listener that enforces Config's limits on the
// connections it accepts. Its connections must be closed through the
// net.Conn it returns, as servers do.
type Listener struct {
	inner net.Listener
	cfg   Config

	mu sync.Mutex // guards the fields below and every conn's state, elem and timer
	// The unauthenticated *conn, oldest first: those still in their
	// handshake, and those past it without a certificate.
	handshaking, certless list.List
	perIP                 map[netip.Addr]int // unauthenticated conns by source
	open                  int                // conns not closed
	closed                bool
	stats                 Stats
	logged                Stats      // stats at the last log line
	lastLog               time.Time  // zero: nothing logged yet
	lastIP                netip.Addr // source of the last conn the limits closed
}

var _ net.Listener = (*Listener)(nil)

// NewListener returns a Listener accepting from inner; closing it closes
// inner.
func NewListener(inner net.Listener, cfg Config) (*Listener, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	return &Listener{inner: inner, cfg: cfg, perIP: map[netip.Addr]int{}}, nil
}

// Accept returns the next connection within the limits; connections over
// them are closed here and never returned.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.inner.Accept()
		if err != nil {
			return nil, err
		}
		if c := l.admit(nc); c != nil {
			return c, nil
		}
	}
}

// admit counts nc in and returns it wrapped, or closes it and returns nil.
func (l *Listener) admit(nc net.Conn) net.Conn {
	src := sourceOf(nc.RemoteAddr())
	l.mu.Lock()
	var evicted *conn
	refuse := false
	switch {
	case l.closed:
		refuse = true
	case l.perIP[src] >= l.cfg.MaxUnauthenticatedPerIP:
		refuse = true
		l.stats.RefusedPerIP++
	case l.unauthenticatedLocked() >= l.cfg.MaxUnauthenticated || l.open >= l.cfg.MaxConns:
		// Sockets that never finished a handshake go first: the one past
		// it may be a gateway joining.
		front := l.handshaking.Front()
		if front == nil {
			front = l.certless.Front()
		}
		if front != nil {
			evicted = front.Value.(*conn)
			l.forgetLocked(evicted)
			l.stats.Evicted++
		} else {
			refuse = true
			l.stats.RefusedFull++
		}
	}
	if refuse {
		l.lastIP = src
		l.noteLocked()
		l.mu.Unlock()
		reset(nc)
		return nil
	}
	c := &conn{Conn: nc, l: l, src: src}
	c.list, c.elem = &l.handshaking, l.handshaking.PushBack(c)
	l.perIP[src]++
	l.open++
	c.timer = time.AfterFunc(l.cfg.HandshakeTimeout, c.expire)
	if evicted != nil {
		l.lastIP = evicted.src
		l.noteLocked()
	}
	l.mu.Unlock()
	if evicted != nil {
		reset(evicted.Conn)
	}
	return c
}

// Close closes inner, and the connections still in their handshake: a
// server that stops does not wait for them.
func (l *Listener) Close() error {
	l.mu.Lock()
	l.closed = true
	var drop []*conn
	for e := l.handshaking.Front(); e != nil; e = e.Next() {
		drop = append(drop, e.Value.(*conn))
	}
	for _, c := range drop {
		l.forgetLocked(c)
	}
	l.mu.Unlock()
	for _, c := range drop {
		reset(c.Conn)
	}
	return l.inner.Close()
}

// Addr returns inner's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Stats returns the gauges and counters.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.Open, s.Unauthenticated = l.open, l.unauthenticatedLocked()
	return s
}

func (l *Listener) unauthenticatedLocked() int { return l.handshaking.Len() + l.certless.Len() }

// forgetLocked takes c out of the counts for good: it is closed or about
// to be.
func (l *Listener) forgetLocked(c *conn) {
	if c.closed {
		return
	}
	c.closed = true
	c.timer.Stop()
	if c.elem != nil {
		c.list.Remove(c.elem)
		c.list, c.elem = nil, nil
		l.dropSourceLocked(c.src)
	}
	l.open--
}

func (l *Listener) dropSourceLocked(src netip.Addr) {
	if l.perIP[src]--; l.perIP[src] <= 0 {
		delete(l.perIP, src)
	}
}

// noteLocked logs what the limits closed since the last line, unless one
// was logged less than LogInterval ago: a flood must not flood the log.
func (l *Listener) noteLocked() {
	now := l.cfg.Now()
	if !l.lastLog.IsZero() && now.Sub(l.lastLog) < l.cfg.LogInterval {
		return
	}
	s, was := l.stats, l.logged
	l.cfg.Logger.Warn("closing connections that have not authenticated: over the connection limits, or past the handshake deadline",
		"refused_per_source", s.RefusedPerIP-was.RefusedPerIP,
		"refused_full", s.RefusedFull-was.RefusedFull,
		"evicted", s.Evicted-was.Evicted,
		"handshake_timeouts", s.HandshakeTimeouts-was.HandshakeTimeouts,
		"since", sinceText(l.lastLog, now),
		"last_source", l.lastIP.String(),
		"open", l.open, "unauthenticated", l.unauthenticatedLocked(),
		"max_conns", l.cfg.MaxConns, "max_unauthenticated", l.cfg.MaxUnauthenticated,
		"max_unauthenticated_per_source", l.cfg.MaxUnauthenticatedPerIP)
	l.logged, l.lastLog = s, now
}

func sinceText(last, now time.Time) string {
	if last.IsZero() {
		return "start"
	}
	return now.Sub(last).Round(time.Second).String() + " ago"
}

// conn is a connection a Listener admitted.
type conn struct {
	net.Conn
	l   *Listener
	src netip.Addr

	// Guarded by l.mu.
	list       *list.List    // l.handshaking or l.certless while unauthenticated and open, else nil
	elem       *list.Element // c's element in list
	timer      *time.Timer   // the handshake deadline
	handshaken bool          // the handshake finished
	closed     bool          // forgotten by the Listener
}

// expire closes c if its handshake has not finished.
func (c *conn) expire() {
	l := c.l
	l.mu.Lock()
	if c.closed || c.handshaken {
		l.mu.Unlock()
		return
	}
	l.forgetLocked(c)
	l.stats.HandshakeTimeouts++
	l.lastIP = c.src
	l.noteLocked()
	l.mu.Unlock()
	reset(c.Conn)
}

// Close closes the connection and leaves the Listener's counts.
func (c *conn) Close() error {
	l := c.l
	l.mu.Lock()
	// The server's own deadline (grpc.ConnectionTimeout) may beat expire
	// to it: a timeout all the same.
	if !c.closed && !c.handshaken && !c.timer.Stop() {
		l.stats.HandshakeTimeouts++
		l.lastIP = c.src
		l.noteLocked()
	}
	l.forgetLocked(c)
	l.mu.Unlock()
	return c.Conn.Close()
}

// Handshaken records that nc's handshake finished, which stops its
// handshake deadline; authenticated says whether the peer proved its
// identity (a verified client certificate), which takes it out of the
// unauthenticated counts. nc must be a connection a Listener returned;
// others are ignored, as are calls after it closed.
func Handshaken(nc net.Conn, authenticated bool) {
	c, ok := nc.(*conn)
	if !ok {
		return
	}
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.closed {
		return
	}
	if c.handshaken {
		return
	}
	c.handshaken = true
	c.timer.Stop()
	c.list.Remove(c.elem)
	if authenticated {
		c.list, c.elem = nil, nil
		l.dropSourceLocked(c.src)
		return
	}
	c.list, c.elem = &l.certless, l.certless.PushBack(c)
}

// sourceOf is the key of addr's per-source count: the IPv4 address, or the
// IPv6 /64. A non-IP address (a Unix socket) counts as one source.
func sourceOf(addr net.Addr) netip.Addr {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
			ip = ap.Addr()
		}
	}
	ip = ip.Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// reset closes nc at once: with a zero linger a TCP socket is reset and
// freed instead of lingering in TIME_WAIT, which a flood would fill.
func reset(nc net.Conn) {
	if tc, ok := nc.(interface{ SetLinger(int) error }); ok {
		_ = tc.SetLinger(0)
	}
	_ = nc.Close()
}
