package simfleet

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

const (
	// DefaultSSHPort is the SSH port every host listens on by default.
	DefaultSSHPort = 2222
	// DefaultHealthPort is the HTTP health port every host listens on by default.
	DefaultHealthPort = 18080
	// DefaultServicePath is where, relative to a host's Root, the health
	// endpoint expects the deployment.
	DefaultServicePath = "app"
	// DefaultNamePrefix prefixes host names.
	DefaultNamePrefix = "node-"

	// maxHosts keeps a fleet inside one 127.R.0.0/16 block.
	maxHosts = 254 * 250
	// bindAttempts bounds how many address blocks Start tries before giving
	// up; a block is abandoned when any of its addresses is taken, which
	// happens when test packages running at once pick the same block.
	bindAttempts = 8
)

// Config describes a fleet.
type Config struct {
	// Hosts is how many hosts to run; at least 1.
	Hosts int
	// Dir is the parent of the host roots (Dir/<name>); required.
	Dir string
	// ClientKeys may log in to every host, as any user name.
	ClientKeys []ssh.PublicKey
	// Password, if not empty, is also accepted for any user name (legacy
	// password authentication). Empty disables password authentication.
	Password string
	// SSHPort is the SSH port on each host's IP; 0 means DefaultSSHPort.
	SSHPort int
	// HealthPort is the HTTP health port on each host's IP; 0 means
	// DefaultHealthPort.
	HealthPort int
	// ServicePath is the deploy path, relative to each host's Root, that the
	// health endpoint watches; empty means DefaultServicePath.
	ServicePath string
	// Logger receives connection-level debug logs; nil discards them.
	Logger *slog.Logger
	// NamePrefix prefixes host names; empty means DefaultNamePrefix.
	NamePrefix string
	// Shell is how hosts run exec commands: ShellProcess (the default,
	// /bin/sh as sshd runs it) or ShellInterp (in this process; see
	// interp.go).
	Shell Shell
}

// CheckAndSetDefaults validates c and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.Hosts < 1 || c.Hosts > maxHosts {
		return fmt.Errorf("simfleet: Hosts = %d, want 1..%d", c.Hosts, maxHosts)
	}
	if c.Dir == "" {
		return errors.New("simfleet: Dir is required")
	}
	if len(c.ClientKeys) == 0 && c.Password == "" {
		return errors.New("simfleet: ClientKeys or Password is required, or nobody can log in")
	}
	if c.SSHPort == 0 {
		c.SSHPort = DefaultSSHPort
	}
	if c.HealthPort == 0 {
		c.HealthPort = DefaultHealthPort
	}
	if c.SSHPort < 0 || c.SSHPort > 65535 || c.HealthPort < 0 || c.HealthPort > 65535 || c.SSHPort == c.HealthPort {
		return fmt.Errorf("simfleet: SSHPort %d and HealthPort %d must be distinct ports", c.SSHPort, c.HealthPort)
	}
	if c.ServicePath == "" {
		c.ServicePath = DefaultServicePath
	}
	if filepath.IsAbs(c.ServicePath) || !filepath.IsLocal(c.ServicePath) {
		return fmt.Errorf("simfleet: ServicePath %q must be relative and stay inside the host root", c.ServicePath)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.NamePrefix == "" {
		c.NamePrefix = DefaultNamePrefix
	}
	return nil
}

// Fleet is a running set of hosts.
type Fleet struct {
	cfg   Config
	hosts []*Host
	http  *http.Server
	wg    sync.WaitGroup // every goroutine the fleet started

	mu     sync.Mutex            // guards conns and closed
	conns  map[net.Conn]struct{} // live SSH connections, closed by Close
	closed bool

	closeOnce sync.Once

	// open counts the SSH connections past their handshake now, peak the
	// most at once; see PeakConnections.
	open, peak atomic.Int64
}

// connOpened counts a connection that completed its handshake.
func (f *Fleet) connOpened() {
	n := f.open.Add(1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

// PeakConnections returns the most SSH connections the fleet's hosts had
// open at once (handshake done, not yet closed) since the fleet started
// or the last ResetPeakConnections. A deployment holds one connection per
// node, so this is how many nodes were deployed at once.
func (f *Fleet) PeakConnections() int64 { return f.peak.Load() }

// ResetPeakConnections starts PeakConnections again from the connections
// open now.
func (f *Fleet) ResetPeakConnections() { f.peak.Store(f.open.Load()) }

// Start creates the host roots and keys, binds every host's SSH and health
// listeners, and starts serving. ctx bounds only the startup; the fleet runs
// until Close.
func Start(ctx context.Context, cfg Config) (*Fleet, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	f := &Fleet{cfg: cfg, conns: map[net.Conn]struct{}{}}
	width := max(3, len(strconv.Itoa(cfg.Hosts)))
	f.hosts = make([]*Host, cfg.Hosts)
	for i := range f.hosts {
		if i%256 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		h, err := newHost(f, fmt.Sprintf("%s%0*d", cfg.NamePrefix, width, i+1))
		if err != nil {
			return nil, err
		}
		f.hosts[i] = h
	}
	if err := f.bind(ctx); err != nil {
		return nil, err
	}

	byIP := make(map[string]http.Handler, len(f.hosts))
	for _, h := range f.hosts {
		byIP[h.IP] = HealthHandler(h.ServiceDir())
	}
	f.http = &http.Server{
		Handler:           hostMux(byIP),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	for _, h := range f.hosts {
		f.wg.Add(2)
		go func() {
			defer f.wg.Done()
			h.acceptLoop()
		}()
		go func() {
			defer f.wg.Done()
			_ = f.http.Serve(h.healthLn) // returns ErrServerClosed on Close
		}()
	}
	return f, nil
}

// newHost creates the host's root and host key; it does not listen yet.
func newHost(f *Fleet, name string) (*Host, error) {
	root := filepath.Join(f.cfg.Dir, name)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("create root for %s: %w", name, err)
	}
	// The root must be absolute and free of symlinks so that SFTP realpath
	// and `pwd -P` agree with Root.
	root, err := filepath.Abs(root)
	if err == nil {
		root, err = filepath.EvalSymlinks(root)
	}
	if err != nil {
		return nil, fmt.Errorf("resolve root for %s: %w", name, err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("host key for %s: %w", name, err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("host key for %s: %w", name, err)
	}
	h := &Host{
		Name:    name,
		Root:    root,
		HostKey: signer.PublicKey(),
		fleet:   f,
	}
	h.sshConfig = f.serverConfig(signer)
	return h, nil
}

// bind gives every host an address in one random block, retrying with a
// new block when any address is taken.
func (f *Fleet) bind(ctx context.Context) error {
	var lastErr error
	for attempt := 0; attempt < bindAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		ips := ipBlock(len(f.hosts))
		err := f.bindBlock(ips)
		if err == nil {
			return nil
		}
		lastErr = err
		if !errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
	}
	return fmt.Errorf("simfleet: no free loopback block after %d attempts: %w", bindAttempts, lastErr)
}

func (f *Fleet) bindBlock(ips []string) error {
	for i, h := range f.hosts {
		ip := ips[i]
		sshLn, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(f.cfg.SSHPort)))
		if err != nil {
			f.closeListeners()
			return fmt.Errorf("listen ssh for %s: %w", h.Name, err)
		}
		h.sshLn = sshLn
		healthLn, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(f.cfg.HealthPort)))
		if err != nil {
			f.closeListeners()
			return fmt.Errorf("listen health for %s: %w", h.Name, err)
		}
		h.healthLn = healthLn
		h.IP = ip
		h.Addr = sshLn.Addr().String()
		h.HealthAddr = healthLn.Addr().String()
	}
	return nil
}

func (f *Fleet) closeListeners() {
	for _, h := range f.hosts {
		if h.sshLn != nil {
			_ = h.sshLn.Close()
			h.sshLn = nil
		}
		if h.healthLn != nil {
			_ = h.healthLn.Close()
			h.healthLn = nil
		}
	}
}

// ipBlock returns n addresses 127.R.x.y with y in 1..254, consecutive from
// a random start, with R in 16..250 to stay clear of 127.0.0.1 and of the
// low blocks other tools like to use.
func ipBlock(n int) []string {
	nets := (n + 253) / 254
	r := randInt(16, 250)
	x0 := randInt(0, 256-nets)
	ips := make([]string, n)
	for i := range ips {
		ips[i] = fmt.Sprintf("127.%d.%d.%d", r, x0+i/254, i%254+1)
	}
	return ips
}

// randInt returns a uniform integer in [lo, hi].
func randInt(lo, hi int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(hi-lo+1)))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return lo + int(v.Int64())
}

// hostMux sends each health request to the handler of the IP it arrived on,
// so one http.Server serves every host.
func hostMux(byIP map[string]http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		tcp, _ := addr.(*net.TCPAddr)
		if tcp == nil {
			http.Error(w, "unknown host", http.StatusMisdirectedRequest)
			return
		}
		h, ok := byIP[tcp.IP.String()]
		if !ok {
			http.Error(w, "unknown host", http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Close stops every listener, connection and command and waits for all
// goroutines of the fleet. It is safe to call more than once.
func (f *Fleet) Close() error {
	var err error
	f.closeOnce.Do(func() {
		for _, h := range f.hosts {
			if cerr := h.sshLn.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
				err = cerr
			}
		}
		// http.Server.Close closes the health listeners and connections.
		if cerr := f.http.Close(); cerr != nil && err == nil {
			err = cerr
		}
		f.mu.Lock()
		f.closed = true
		for c := range f.conns {
			_ = c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return err
}

// track registers a live connection so Close can cut it. It reports false,
// having closed c, when the fleet is already closing.
func (f *Fleet) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		_ = c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Fleet) untrack(c net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.conns, c)
}

// Hosts returns the hosts in name order. The slice must not be modified.
func (f *Fleet) Hosts() []*Host { return f.hosts }

// KnownHosts returns a known_hosts file with one line per host.
func (f *Fleet) KnownHosts() []byte {
	var b bytes.Buffer
	for _, h := range f.hosts {
		b.WriteString(h.KnownHostsLine())
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// WriteKnownHosts writes KnownHosts to path.
func (f *Fleet) WriteKnownHosts(path string) error {
	if err := os.WriteFile(path, f.KnownHosts(), 0o600); err != nil {
		return fmt.Errorf("write known_hosts: %w", err)
	}
	return nil
}
