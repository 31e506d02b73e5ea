package sshexec

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// faultProxy forwards TCP connections to a target. After blackhole() it
// keeps every connection open but silently drops all traffic both ways, as
// a dead network path or a hung host does.
type faultProxy struct {
	addr   string
	target string
	ln     net.Listener
	holed  atomic.Bool
	// accepted counts the connections accepted, that is the attempts a
	// client made through the proxy.
	accepted atomic.Int64

	mu     sync.Mutex
	conns  []net.Conn // guarded by mu
	closed bool       // guarded by mu
	wg     sync.WaitGroup
}

func startProxy(t testing.TB, target string) *faultProxy {
	t.Helper()
	var ln net.Listener
	var err error
	for range 5 {
		host, _ := randomLoopback()
		if ln, err = net.Listen("tcp", net.JoinHostPort(host, "0")); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{addr: ln.Addr().String(), target: target, ln: ln}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) blackhole() { p.holed.Store(true) }

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(out, in)
		go p.pipe(in, out)
	}
}

// pipe copies src to dst until either fails, dropping data while the
// proxy is blackholed. It keeps reading so that the sender sees its data
// acknowledged and nothing but the silence gives the fault away.
func (p *faultProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.holed.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *faultProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// silentServer accepts TCP connections and never says anything, like a
// host whose sshd hangs before its banner.
func silentServer(t testing.TB) string {
	t.Helper()
	host, _ := randomLoopback()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("accept: %v", err)
				}
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			// Closed by Cleanup, after Accept has returned for good.
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}
