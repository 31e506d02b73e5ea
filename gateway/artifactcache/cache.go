package artifactcache

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Fetcher streams an artifact from the control plane.
// outpostv1.GatewayServiceClient implements it.
type Fetcher interface {
	FetchArtifact(ctx context.Context, in *outpostv1.FetchArtifactRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[outpostv1.FetchArtifactResponse], error)
}

var _ Fetcher = outpostv1.GatewayServiceClient(nil)

// DefaultMaxResumes is how often a fetch resumes from its offset after the
// stream broke, when Config.MaxResumes is zero.
const DefaultMaxResumes = 3

// DefaultMaxBytes is the cache's limit when Config.MaxBytes is zero.
const DefaultMaxBytes = 20 << 30

// Config configures a Cache.
type Config struct {
	// Dir holds the cache (required). It is created if missing.
	Dir string
	// Fetcher fetches artifacts that are not cached (required).
	Fetcher Fetcher
	// MaxResumes is how many times one fetch continues from where a broken
	// stream stopped, as long as each attempt made progress; zero means
	// DefaultMaxResumes, negative means never.
	MaxResumes int
	// MaxBytes bounds the total size of the cached artifact files and of
	// the fetches in progress (counted from the size the control plane
	// announces); zero means DefaultMaxBytes, negative is an error. The
	// least recently used artifacts not in use (see Pin) are evicted to
	// stay within it; it is exceeded while every artifact is in use.
	MaxBytes int64
	// Now is the clock that stamps a use on a file; nil means time.Now.
	Now func() time.Time
	// Logger receives fetch events; nil discards.
	Logger *slog.Logger
	// Registerer receives the cache's metrics; nil means they are kept but
	// not exported.
	Registerer prometheus.Registerer
}

// CheckAndSetDefaults validates c and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.Dir == "" {
		return errors.New("artifactcache: Dir is required")
	}
	if c.Fetcher == nil {
		return errors.New("artifactcache: Fetcher is required")
	}
	if c.MaxResumes == 0 {
		c.MaxResumes = DefaultMaxResumes
	}
	if c.MaxResumes < 0 {
		c.MaxResumes = 0
	}
	if c.MaxBytes < 0 {
		return fmt.Errorf("artifactcache: MaxBytes %d is negative", c.MaxBytes)
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Cache is a directory of verified artifacts. It is safe for concurrent use.
type Cache struct {
	cfg       Config
	blobDir   string
	tmpDir    string
	hits      prometheus.Counter
	misses    prometheus.Counter
	fetched   prometheus.Counter
	evictions prometheus.Counter
	bytes     prometheus.Gauge
	count     prometheus.Gauge

	mu       sync.Mutex
	inflight map[string]*call  // guarded by mu: fetches running now, by digest
	entries  map[string]*entry // guarded by mu: the cached files, by digest
	lru      *list.List        // guarded by mu: of *entry, most recently used first
	total    int64             // guarded by mu: bytes of the entries
	reserved int64             // guarded by mu: announced bytes of the fetches in progress
	over     bool              // guarded by mu: over MaxBytes at the last eviction (logged once)
	evictSeq uint64            // guarded by mu: numbers evicted files in tmp
}

// call is one fetch that concurrent Gets of the same digest wait for.
type call struct {
	done    chan struct{} // closed when err is set
	err     error         // nil: the artifact is in the index (waiters pin it themselves)
	waiters int           // guarded by Cache.mu: Gets waiting for this call (tests look)
}

// New creates the cache directories, removes temporary files left by an
// earlier process that stopped mid-fetch or mid-eviction, indexes the
// artifacts it left (ordered by last use, the files' modification time)
// and evicts the least recently used of them beyond MaxBytes.
func New(cfg Config) (*Cache, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	c := &Cache{
		cfg:     cfg,
		blobDir: filepath.Join(cfg.Dir, "sha256"),
		tmpDir:  filepath.Join(cfg.Dir, "tmp"),
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_gateway_artifact_cache_hits_total",
			Help: "Artifact requests answered without fetching from the control plane.",
		}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_gateway_artifact_cache_misses_total",
			Help: "Artifact fetches from the control plane.",
		}),
		fetched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_gateway_artifact_fetched_bytes_total",
			Help: "Artifact bytes received from the control plane, including failed fetches.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_gateway_artifact_cache_evictions_total",
			Help: "Artifacts removed from the cache to keep it within its limit.",
		}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_gateway_artifact_cache_bytes",
			Help: "Size of the artifact files in the cache, those in use included.",
		}),
		count: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_gateway_artifact_cache_entries",
			Help: "Artifacts in the cache.",
		}),
		inflight: make(map[string]*call),
		entries:  make(map[string]*entry),
		lru:      list.New(),
	}
	limit := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "outpost_gateway_artifact_cache_limit_bytes",
		Help: "The cache's size limit (--artifact-cache-size).",
	})
	limit.Set(float64(cfg.MaxBytes))
	if cfg.Registerer != nil {
		for _, m := range []prometheus.Collector{c.hits, c.misses, c.fetched, c.evictions, c.bytes, c.count, limit} {
			if err := cfg.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("artifactcache: register metrics: %w", err)
			}
		}
	}
	for _, d := range []string{c.blobDir, c.tmpDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("artifactcache: %w", err)
		}
	}
	stale, err := os.ReadDir(c.tmpDir)
	if err != nil {
		return nil, fmt.Errorf("artifactcache: %w", err)
	}
	for _, e := range stale {
		if err := os.RemoveAll(filepath.Join(c.tmpDir, e.Name())); err != nil {
			return nil, fmt.Errorf("artifactcache: remove stale fetch: %w", err)
		}
	}
	if err := c.scan(); err != nil {
		return nil, err
	}
	return c, nil
}

// ErrBadDigest reports a digest that is not 64 lower-case hex digits.
var ErrBadDigest = errors.New("not a lower-case hex SHA-256")

// VerifyError reports fetched bytes that do not match the artifact asked for.
type VerifyError struct {
	// Digest is the SHA-256 asked for.
	Digest string
	// Reason says what did not match, for people.
	Reason string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("artifact %s: %s", e.Digest, e.Reason)
}

// ValidDigest reports whether s is a lower-case hex SHA-256.
func ValidDigest(s string) bool {
	if len(s) != sha256.Size*2 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// Get returns the verified artifact with SHA-256 digest, pinned, fetching
// it first when it is not cached. The caller must Release the Pin when it
// no longer reads the file. A Get counts as a use of the artifact.
//
// When ctx ends, Get returns ctx's error; a fetch shared with other Gets
// then goes on for them (one of them takes it over from the start).
func (c *Cache) Get(ctx context.Context, digest string) (*Pin, error) {
	if !ValidDigest(digest) {
		return nil, fmt.Errorf("artifact %q: %w", digest, ErrBadDigest)
	}
	for {
		c.mu.Lock()
		if e := c.entries[digest]; e != nil && e.verified {
			p := c.pinLocked(e)
			c.mu.Unlock()
			c.hits.Inc()
			c.touch(p)
			return p, nil
		}
		if cl, ok := c.inflight[digest]; ok {
			cl.waiters++
			c.mu.Unlock()
			select {
			case <-cl.done:
			case <-ctx.Done():
				c.mu.Lock()
				cl.waiters--
				c.mu.Unlock()
				return nil, ctx.Err()
			}
			switch {
			case cl.err == nil:
				// Cached now: pin it as a hit (or fetch it again if it
				// was evicted meanwhile).
				continue
			case isCtxErr(cl.err) && ctx.Err() == nil:
				// The fetch's owner gave up (its ctx ended) but ours
				// is still live: try again, probably as the owner.
				continue
			}
			return nil, cl.err
		}
		cl := &call{done: make(chan struct{})}
		c.inflight[digest] = cl
		c.mu.Unlock()

		p, err := c.load(ctx, digest)
		cl.err = err
		c.mu.Lock()
		delete(c.inflight, digest)
		c.mu.Unlock()
		close(cl.done)
		return p, err
	}
}

// Cached returns the cached artifact with SHA-256 digest, pinned, without
// fetching it, and whether there is one; the caller must Release the Pin.
// It counts as a use of the artifact. The file is verified when this
// process fetched or served it before; a copy left by an earlier process
// is returned unverified: the delta built against it is checked on the
// node by the new artifact's SHA-256, so a damaged base can only cost a
// full upload.
func (c *Cache) Cached(digest string) (*Pin, bool) {
	if !ValidDigest(digest) {
		return nil, false
	}
	c.mu.Lock()
	e := c.entries[digest]
	if e == nil {
		c.mu.Unlock()
		return nil, false
	}
	p := c.pinLocked(e)
	c.mu.Unlock()
	c.touch(p)
	return p, true
}

// ctxOr returns ctx's error when ctx has ended, so that callers can tell
// "we gave up" (context.Canceled) from a gRPC failure; otherwise err.
func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func isCtxErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// load returns the cached file for digest, pinned, hashing a file an
// earlier process left and fetching it when it is missing or damaged.
// Only one load per digest runs at a time.
func (c *Cache) load(ctx context.Context, digest string) (*Pin, error) {
	c.mu.Lock()
	var p *Pin
	if e := c.entries[digest]; e != nil {
		p = c.pinLocked(e) // kept while it is hashed
	}
	c.mu.Unlock()
	if p != nil {
		ok, err := c.checkCached(p)
		if ok {
			c.mu.Lock()
			p.e.verified = true
			c.mu.Unlock()
			c.hits.Inc()
			c.touch(p)
			return p, nil
		}
		p.Release()
		if err != nil {
			return nil, err
		}
	}
	c.misses.Inc()
	size, err := c.fetch(ctx, digest, filepath.Join(c.blobDir, digest))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	p = c.addLocked(digest, size)
	victims := c.evictLocked()
	c.mu.Unlock()
	c.removeEvicted(victims)
	c.touch(p)
	return p, nil
}

// checkCached reports whether p's unverified file is a copy of its
// artifact by hashing it. A damaged or vanished file leaves the index, and
// a damaged one is removed (a reader that opened it keeps its bytes).
func (c *Cache) checkCached(p *Pin) (bool, error) {
	digest := p.e.digest
	sum, err := fileSHA256(p.path)
	if errors.Is(err, fs.ErrNotExist) {
		c.cfg.Logger.Warn("cached artifact vanished; fetching it again", "sha256", digest)
		c.mu.Lock()
		c.dropLocked(p.e)
		c.mu.Unlock()
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("artifact %s: %w", digest, err)
	}
	if sum == digest {
		return true, nil
	}
	c.cfg.Logger.Warn("cached artifact is damaged; fetching it again", "sha256", digest, "got_sha256", sum)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(p.e)
	if err := os.Remove(p.path); err != nil {
		return false, fmt.Errorf("artifact %s: remove damaged copy: %w", digest, err)
	}
	return false, nil
}

func fileSHA256(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fetch streams digest into a temporary file, verifies it, renames it to
// final and returns its size. On any error the temporary file is removed.
func (c *Cache) fetch(ctx context.Context, digest, final string) (size int64, err error) {
	tmp, err := os.CreateTemp(c.tmpDir, digest+".*.partial")
	if err != nil {
		return 0, fmt.Errorf("artifact %s: %w", digest, err)
	}
	st := &fetchState{digest: digest, size: -1, h: sha256.New(), w: tmp}
	defer func() {
		c.reserve(-st.reserved)
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	log := c.cfg.Logger.With("sha256", digest)
	log.Info("fetching artifact from the control plane")

	for attempt := 0; ; attempt++ {
		before := st.n
		err := c.stream(ctx, st)
		if err == nil {
			break
		}
		var verr *VerifyError
		retry := !errors.As(err, &verr) && ctx.Err() == nil && st.n > before && attempt < c.cfg.MaxResumes
		if !retry {
			return 0, err
		}
		log.Warn("artifact fetch broke; resuming", "offset", st.n, "error", err)
	}
	if st.n != st.size {
		return 0, &VerifyError{Digest: digest, Reason: fmt.Sprintf("truncated: got %d of %d bytes", st.n, st.size)}
	}
	if got := hex.EncodeToString(st.h.Sum(nil)); got != digest {
		return 0, &VerifyError{Digest: digest, Reason: fmt.Sprintf("sha256 mismatch: got %s", got)}
	}
	if err := tmp.Sync(); err != nil {
		return 0, fmt.Errorf("artifact %s: %w", digest, err)
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("artifact %s: %w", digest, err)
	}
	if err := os.Chmod(tmp.Name(), 0o400); err != nil {
		return 0, fmt.Errorf("artifact %s: %w", digest, err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return 0, fmt.Errorf("artifact %s: %w", digest, err)
	}
	syncDir(c.blobDir)
	log.Info("artifact cached", "bytes", st.n)
	return st.n, nil
}

// syncDir makes a rename durable. Failure only costs a re-fetch after a
// crash, so it is not reported.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	d.Sync()
	d.Close()
}

// fetchState is the progress of one fetch across resumed streams.
type fetchState struct {
	digest string
	size   int64 // announced size; -1 until the first message
	// reserved is what this fetch added to Cache.reserved: size once
	// announced, at most MaxBytes (a control plane announcing more
	// empties the unpinned cache at worst, then fails verification).
	reserved int64
	n        int64 // bytes written
	h        hash.Hash
	w        io.Writer
}

// stream fetches from st.n to the end of the artifact.
func (c *Cache) stream(ctx context.Context, st *fetchState) error {
	rpcCtx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the RPC when we stop reading early
	s, err := c.cfg.Fetcher.FetchArtifact(rpcCtx, &outpostv1.FetchArtifactRequest{Sha256: st.digest, Offset: st.n})
	if err != nil {
		return fmt.Errorf("fetch artifact %s: %w", st.digest, ctxOr(ctx, err))
	}
	first := true
	for {
		msg, err := s.Recv()
		if err == io.EOF {
			if first {
				return fmt.Errorf("fetch artifact %s: empty response", st.digest)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("fetch artifact %s at offset %d: %w", st.digest, st.n, ctxOr(ctx, err))
		}
		if first {
			first = false
			a := msg.GetArtifact()
			if a == nil {
				return &VerifyError{Digest: st.digest, Reason: "first message carries no metadata"}
			}
			if a.GetSha256() != st.digest {
				return &VerifyError{Digest: st.digest, Reason: fmt.Sprintf("control plane sent artifact %q", a.GetSha256())}
			}
			if a.GetSize() < 0 || st.size >= 0 && a.GetSize() != st.size {
				return &VerifyError{Digest: st.digest, Reason: fmt.Sprintf("announced size %d changed or invalid", a.GetSize())}
			}
			if st.size < 0 {
				// Make room before the bytes arrive, so that the disk
				// holds the limit's worth, not the limit and a fetch.
				st.reserved = min(a.GetSize(), c.cfg.MaxBytes)
				c.reserve(st.reserved)
			}
			st.size = a.GetSize()
		}
		chunk := msg.GetChunk()
		if st.n+int64(len(chunk)) > st.size {
			return &VerifyError{Digest: st.digest, Reason: fmt.Sprintf("more than the announced %d bytes", st.size)}
		}
		if _, err := st.w.Write(chunk); err != nil {
			return fmt.Errorf("artifact %s: %w", st.digest, err)
		}
		st.h.Write(chunk)
		st.n += int64(len(chunk))
		c.fetched.Add(float64(len(chunk)))
	}
}
