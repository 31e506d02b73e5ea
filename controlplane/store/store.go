package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// ErrNotLeader is returned by fenced writes when the fence no longer holds:
// this replica lost leadership (or never had it) and wrote nothing.
var ErrNotLeader = errors.New("not the leader")

// ErrConflict is returned by [Store.TxnIf] when the fence holds but one of
// the caller's own comparisons failed (for example, the object changed since
// it was read). Nothing was written.
var ErrConflict = errors.New("conflict: object changed")

// Fence guards a write: the write happens only if every comparison holds.
// *leader.Leadership implements it with the leader key's create revision.
type Fence interface {
	Cmps() []clientv3.Cmp
}

// Cmps is a Fence made of fixed comparisons; handy in tests and for
// guards that do not come from an election.
type Cmps []clientv3.Cmp

// Cmps implements Fence.
func (c Cmps) Cmps() []clientv3.Cmp { return c }

// Defaults used by [Config.CheckAndSetDefaults].
const (
	DefaultDialTimeout = 5 * time.Second
	// DefaultStartTimeout bounds how long Open waits for an embedded etcd to
	// become ready when ctx has no earlier deadline.
	DefaultStartTimeout = time.Minute
)

// Config says which etcd to use.
type Config struct {
	// DataDir is the control plane's data directory; the embedded etcd keeps
	// its data in DataDir/etcd. Required when Endpoints is empty, unused
	// otherwise.
	DataDir string
	// Endpoints are the client URLs of an external etcd cluster. Empty
	// means: start an embedded single-node etcd in this process, listening
	// only on unix sockets in DataDir/etcd (see [EmbeddedClientSocket]).
	// Endpoints must all be https:// (or unixs://), with CertFile and
	// KeyFile, unless Insecure is set.
	Endpoints []string
	// CAFile is a PEM file of the CA certificates that sign the external
	// etcd's server certificates; "" means the system's roots.
	CAFile string
	// CertFile and KeyFile are the PEM client certificate and key this
	// control plane shows the external etcd (etcd --client-cert-auth);
	// both or neither. "" means none.
	CertFile, KeyFile string
	// Insecure allows external endpoints without TLS (http://, unix://),
	// and TLS endpoints without a client certificate. Without it Open
	// refuses them: whoever can reach such an endpoint reads the whole
	// state and rewrites every rollout.
	Insecure bool
	// DialTimeout bounds connecting to etcd. Zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// Logger receives etcd's errors and the store's own messages. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// CheckAndSetDefaults validates the config and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if len(c.Endpoints) == 0 && c.DataDir == "" {
		return errors.New("store: DataDir is required for the embedded etcd (or set Endpoints)")
	}
	if err := c.checkExternal(); err != nil {
		return err
	}
	if c.DialTimeout < 0 {
		return fmt.Errorf("store: negative DialTimeout %v", c.DialTimeout)
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Store reads and writes Outpost's state in etcd. It is safe for
// concurrent use.
type Store struct {
	client    *clientv3.Client
	embedded  *embedded // nil with an external cluster
	endpoints []string
	logger    *slog.Logger
	stopping  atomic.Bool // set by Close: etcd's shutdown errors are noise

	closeOnce sync.Once
	closeErr  error // set by closeOnce

	// done is closed once the store stopped: Close, or the embedded etcd
	// stopping by itself (failure says why).
	done      chan struct{}
	doneOnce  sync.Once
	closing   chan struct{}  // closed by Close: the watch of the embedded etcd ends
	watchWG   sync.WaitGroup // the watch of the embedded etcd
	failureMu sync.Mutex
	failure   error // guarded by failureMu

	writeTxns      atomic.Int64
	writeOps       atomic.Int64
	fenceFailures  atomic.Int64
	compareFailure atomic.Int64
}

// Open connects to etcd as cfg says. With no Endpoints it starts an embedded
// etcd and waits, bounded by ctx (and DefaultStartTimeout), until it serves.
// ctx only bounds opening: it does not limit the Store's lifetime. Close the
// Store to release the client and stop the embedded etcd.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	s := &Store{logger: cfg.Logger, done: make(chan struct{}), closing: make(chan struct{})}
	zl := newZapLogger(cfg.Logger, &s.stopping, os.Exit)
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	endpoints := cfg.Endpoints
	if len(endpoints) == 0 {
		e, err := startEmbedded(ctx, cfg.DataDir, zl)
		if err != nil {
			return nil, err
		}
		s.embedded = e
		s.watchWG.Add(1)
		go func() {
			defer s.watchWG.Done()
			s.watchEmbedded(e.etcd)
		}()
		endpoints = []string{e.endpoint}
	}
	s.endpoints = append([]string(nil), endpoints...)

	client, err := clientv3.New(clientv3.Config{
		Endpoints:   s.endpoints,
		DialTimeout: cfg.DialTimeout,
		TLS:         tlsCfg,
		Logger:      zl,
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("store: etcd client: %w", err)
	}
	s.client = client

	// clientv3.New does not wait for a connection; one cheap read proves
	// the cluster answers before Open claims success.
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := client.Get(pctx, LeaderPrefix, clientv3.WithCountOnly()); err != nil {
		s.Close()
		return nil, fmt.Errorf("store: reach etcd at %v: %w", s.endpoints, err)
	}
	return s, nil
}

// Client returns the etcd client, for the etcd primitives the Store does
// not wrap: leader election with etcd's concurrency package
// (controlplane/leader), the audit log's appends, compared on the newest
// key of a range (controlplane/audit/log.go), its janitor's time-bounded
// range deletes, the rollout engine's presence lease, kept alive for a
// leadership term, and WatchRollout's snapshot, which needs the revision
// its first read saw (controlplane/watch.go). Everything else goes
// through the Store's methods. The client is closed by Close.
func (s *Store) Client() *clientv3.Client { return s.client }

// Endpoints returns the etcd client URLs in use. With an embedded etcd this
// is its unix socket (unix:///DATADIR/etcd/client.sock, or a
// /proc/self/fd path that only this process can use when the data dir's
// path is too long for a socket), so a second control plane replica in a
// test can share it (with Insecure).
func (s *Store) Endpoints() []string { return append([]string(nil), s.endpoints...) }

// Close closes the client and, when embedded, stops etcd and waits for it
// to finish. Watches and leases of this client end. Later calls return the
// first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.stopping.Store(true)
		close(s.closing)
		s.watchWG.Wait()
		if s.client != nil {
			if err := s.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
				s.closeErr = fmt.Errorf("store: close client: %w", err)
			}
		}
		s.stopEmbedded()
		s.doneOnce.Do(func() { close(s.done) })
	})
	return s.closeErr
}

// Done returns a channel closed when the store stopped: Close was called,
// or the embedded etcd stopped by itself (Err says why). Nothing works
// after it, and a control plane must not carry on without its state.
// With an external cluster only Close closes it: the client rides out an
// unreachable etcd.
func (s *Store) Done() <-chan struct{} { return s.done }

// Err returns why the embedded etcd stopped by itself, or nil.
func (s *Store) Err() error {
	s.failureMu.Lock()
	defer s.failureMu.Unlock()
	return s.failure
}

// watchEmbedded notices the embedded etcd stopping before Close: one of
// its servers failed (Err), or the server stopped itself. (A fatal error
// in etcd exits the process; see newZapLogger.)
func (s *Store) watchEmbedded(e *embed.Etcd) {
	var err error
	select {
	case err = <-e.Err():
		if err == nil {
			err = errors.New("embedded etcd closed")
		}
	case <-e.Server.StopNotify():
		err = errors.New("embedded etcd server stopped")
	case <-s.closing:
		return
	}
	if s.stopping.Load() {
		return
	}
	s.failureMu.Lock()
	s.failure = fmt.Errorf("store: %w", err)
	s.failureMu.Unlock()
	s.doneOnce.Do(func() { close(s.done) })
}

// Revision returns etcd's current revision: list after reading it, then
// watch from Revision+1 to miss no change (some may be seen twice).
func (s *Store) Revision(ctx context.Context) (int64, error) {
	resp, err := s.client.Get(ctx, LeaderPrefix, clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	return resp.Header.Revision, nil
}

func (s *Store) stopEmbedded() {
	s.stopping.Store(true)
	if s.embedded != nil {
		s.embedded.close()
		s.embedded = nil
	}
}

// Stats are cumulative counters of writes sent to etcd, for metrics.
type Stats struct {
	// WriteTxns counts write requests (Put, Delete and transactions),
	// including ones that failed their guard.
	WriteTxns int64
	// WriteOps counts the operations inside those requests.
	WriteOps int64
	// FenceFailures counts fenced writes refused with ErrNotLeader.
	FenceFailures int64
	// Conflicts counts TxnIf writes refused with ErrConflict.
	Conflicts int64
}

// Stats returns a snapshot of the write counters.
func (s *Store) Stats() Stats {
	return Stats{
		WriteTxns:     s.writeTxns.Load(),
		WriteOps:      s.writeOps.Load(),
		FenceFailures: s.fenceFailures.Load(),
		Conflicts:     s.compareFailure.Load(),
	}
}
