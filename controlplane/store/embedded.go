package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// embeddedCatchUpEntries is how many applied raft entries the embedded,
// single-member etcd keeps in memory after each snapshot.
const embeddedCatchUpEntries = 100

// portAttempts bounds retries when a port picked as free is taken before
// etcd binds it (tests of several packages start etcds at the same time).
const portAttempts = 5

// startEmbedded starts a single-node etcd with its data in dataDir/etcd and
// waits until it serves. It returns a func that releases the data dir lock.
func startEmbedded(ctx context.Context, dataDir string, zl *zap.Logger, logger *slog.Logger) (*embed.Etcd, func(), error) {
	dir := filepath.Join(dataDir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	// bbolt would block forever on a data dir another process (or another
	// Store in this process) holds; a lock we take first fails fast instead.
	unlock, err := lockDir(dataDir)
	if err != nil {
		return nil, nil, err
	}

	var e *embed.Etcd
	for attempt := 1; ; attempt++ {
		e, err = embed.StartEtcd(embedConfig(dir, zl))
		if err == nil {
			break
		}
		if attempt == portAttempts || !errors.Is(err, syscall.EADDRINUSE) {
			unlock()
			return nil, nil, fmt.Errorf("store: start embedded etcd: %w", err)
		}
		logger.Debug("embedded etcd port taken, retrying", "attempt", attempt, "err", err)
	}

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, unlock, nil
	case err := <-e.Err():
		e.Close()
		unlock()
		return nil, nil, fmt.Errorf("store: embedded etcd: %w", err)
	case <-ctx.Done():
		e.Close()
		unlock()
		return nil, nil, fmt.Errorf("store: wait for embedded etcd: %w", ctx.Err())
	}
}

func embedConfig(dir string, zl *zap.Logger) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = "outpost"
	cfg.Dir = dir
	client := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort()))}
	peer := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort()))}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zl)
	// Keep an hour of history: watchers that resume from an older revision
	// get ErrCompacted and must re-list, and the database stays bounded.
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = "1h"
	// etcd keeps the last SnapshotCatchUpEntries raft entries in memory
	// for followers that fall behind (default 5,000). This etcd has no
	// followers, and its entries are big (transactions of up to 128 node
	// records or 64 audit entries): a 10,000-node rollout writes about
	// 8,000 of them, all held in memory, most of the control plane's heap.
	cfg.SnapshotCatchUpEntries = embeddedCatchUpEntries
	return cfg
}

// freePort returns a loopback TCP port that was free a moment ago. The
// caller retries on EADDRINUSE because another process may take it first.
func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0 // etcd then fails to bind and the caller reports it
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lockDir takes an exclusive, non-blocking flock on dataDir/etcd.lock.
// flock locks belong to the open file description, so a second Store in the
// same process is refused too.
func lockDir(dataDir string) (func(), error) {
	path := filepath.Join(dataDir, "etcd.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("store: data dir %s is in use by another control plane", dataDir)
		}
		return nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
