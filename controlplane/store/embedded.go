package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"syscall"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// embeddedCatchUpEntries is how many applied raft entries the embedded,
// single-member etcd keeps in memory after each snapshot.
const embeddedCatchUpEntries = 100

// The embedded etcd listens on unix sockets in DataDir/etcd, a directory
// only the control plane's user may enter: no other local account can
// reach it, as it could a loopback TCP port.
const (
	// EmbeddedDir is the embedded etcd's directory in the data directory:
	// its data and its sockets.
	EmbeddedDir = "etcd"
	// EmbeddedClientSocket is the embedded etcd's client socket in
	// EmbeddedDir; etcdctl --endpoints unix://DATADIR/etcd/client.sock
	// reaches it (as the control plane's user).
	EmbeddedClientSocket = "client.sock"
	// embeddedPeerSocket is the peer socket etcd insists on listening on;
	// a single-member cluster has no peer to use it.
	embeddedPeerSocket = "peer.sock"
	// maxSocketPath is the longest socket path every unix accepts
	// (sun_path is 104 bytes on macOS and the BSDs, 108 on Linux, with
	// the terminating NUL).
	maxSocketPath = 103
)

// embeddedAdvertiseURL is what the embedded etcd advertises as its client
// and peer URL. etcd wants a host:port there and records it in its member
// list; nothing dials it (the member has no peers, and the store dials the
// socket it knows), so it names no address anyone could listen on.
var embeddedAdvertiseURL = url.URL{Scheme: "unix", Host: "localhost:0"}

// embedded is a running embedded etcd.
type embedded struct {
	etcd     *embed.Etcd
	endpoint string // the client socket's URL
	release  func() // closes the socket directory and releases the data dir lock
}

// close stops etcd and waits for it, then releases the data dir.
func (e *embedded) close() {
	e.etcd.Close()
	e.release()
}

// startEmbedded starts a single-node etcd with its data and sockets in
// dataDir/etcd and waits until it serves.
func startEmbedded(ctx context.Context, dataDir string, zl *zap.Logger) (*embedded, error) {
	dataDir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("store: data dir: %w", err)
	}
	dir := filepath.Join(dataDir, EmbeddedDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	// The directory's mode is what keeps other users off the sockets; an
	// older or hand-made one may be wider.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	// bbolt would block forever on a data dir another process (or another
	// Store in this process) holds; a lock we take first fails fast instead.
	unlock, err := lockDir(dataDir)
	if err != nil {
		return nil, err
	}
	sockDir, closeSockDir, err := socketDir(dir)
	if err != nil {
		unlock()
		return nil, err
	}
	release := func() {
		closeSockDir()
		unlock()
	}

	e, err := embed.StartEtcd(embedConfig(dir, sockDir, zl))
	if err != nil {
		release()
		return nil, fmt.Errorf("store: start embedded etcd: %w", err)
	}
	em := &embedded{etcd: e, endpoint: "unix://" + filepath.Join(sockDir, EmbeddedClientSocket), release: release}
	// The directory already keeps others out; the sockets' own modes
	// say the same to whoever looks.
	for _, name := range []string{EmbeddedClientSocket, embeddedPeerSocket} {
		if err := os.Chmod(filepath.Join(sockDir, name), 0o600); err != nil {
			em.close()
			return nil, fmt.Errorf("store: embedded etcd socket: %w", err)
		}
	}

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}
	select {
	case <-e.Server.ReadyNotify():
		return em, nil
	case err := <-e.Err():
		em.close()
		return nil, fmt.Errorf("store: embedded etcd: %w", err)
	case <-ctx.Done():
		em.close()
		return nil, fmt.Errorf("store: wait for embedded etcd: %w", ctx.Err())
	}
}

// socketDir returns the path by which to name the sockets in dir, and a
// func to call once etcd is stopped. That is dir itself when the socket
// paths fit in a sockaddr; else (a deep data dir) it is dir reached through
// an open descriptor, /proc/self/fd/N, which only this process can use.
func socketDir(dir string) (string, func(), error) {
	if len(filepath.Join(dir, EmbeddedClientSocket)) <= maxSocketPath {
		return dir, func() {}, nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return "", nil, fmt.Errorf("store: %w", err)
	}
	via := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	if fi, err := os.Stat(via); err != nil || !fi.IsDir() {
		f.Close()
		return "", nil, fmt.Errorf("store: data dir path %s is too long for the embedded etcd's unix socket (at most %d bytes with %s/%s); choose a shorter data dir",
			dir, maxSocketPath, EmbeddedDir, EmbeddedClientSocket)
	}
	return via, func() { f.Close() }, nil
}

func embedConfig(dir, sockDir string, zl *zap.Logger) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = "outpost"
	cfg.Dir = dir
	// etcd takes a client socket's path from the URL's path, a peer
	// socket's from its host.
	cfg.ListenClientUrls = []url.URL{{Scheme: "unix", Path: filepath.Join(sockDir, EmbeddedClientSocket)}}
	cfg.ListenPeerUrls = []url.URL{{Scheme: "unix", Host: filepath.Join(sockDir, embeddedPeerSocket)}}
	cfg.AdvertiseClientUrls = []url.URL{embeddedAdvertiseURL}
	cfg.AdvertisePeerUrls = []url.URL{embeddedAdvertiseURL}
	// No metrics or HTTP-only listeners either.
	cfg.ListenMetricsUrls = nil
	cfg.ListenClientHttpUrls = nil
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
