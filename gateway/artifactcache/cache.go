package artifactcache

import (
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
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Cache is a directory of verified artifacts. It is safe for concurrent use.
type Cache struct {
	cfg      Config
	blobDir  string
	tmpDir   string
	hits     prometheus.Counter
	misses   prometheus.Counter
	fetched  prometheus.Counter
	mu       sync.Mutex
	inflight map[string]*call // guarded by mu: fetches running now, by digest
	verified map[string]bool  // guarded by mu: cached files hashed by this process
}

// call is one fetch that concurrent Gets of the same digest wait for.
type call struct {
	done    chan struct{} // closed when path and err are set
	path    string
	err     error
	waiters int // guarded by Cache.mu: Gets waiting for this call (tests look)
}

// New creates the cache directories and removes temporary files left by an
// earlier process that stopped mid-fetch.
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
		inflight: make(map[string]*call),
		verified: make(map[string]bool),
	}
	if cfg.Registerer != nil {
		for _, m := range []prometheus.Collector{c.hits, c.misses, c.fetched} {
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

// Get returns the path of the verified artifact with SHA-256 digest,
// fetching it first when it is not cached. The file must not be modified.
//
// When ctx ends, Get returns ctx's error; a fetch shared with other Gets
// then goes on for them (one of them takes it over from the start).
func (c *Cache) Get(ctx context.Context, digest string) (string, error) {
	if !ValidDigest(digest) {
		return "", fmt.Errorf("artifact %q: %w", digest, ErrBadDigest)
	}
	for {
		c.mu.Lock()
		if cl, ok := c.inflight[digest]; ok {
			cl.waiters++
			c.mu.Unlock()
			select {
			case <-cl.done:
			case <-ctx.Done():
				c.mu.Lock()
				cl.waiters--
				c.mu.Unlock()
				return "", ctx.Err()
			}
			// The fetch's owner gave up (its ctx ended) but ours is still
			// live: try again, probably as the owner.
			if cl.err != nil && isCtxErr(cl.err) && ctx.Err() == nil {
				continue
			}
			if cl.err == nil {
				c.hits.Inc()
			}
			return cl.path, cl.err
		}
		cl := &call{done: make(chan struct{})}
		c.inflight[digest] = cl
		c.mu.Unlock()

		cl.path, cl.err = c.load(ctx, digest)
		c.mu.Lock()
		delete(c.inflight, digest)
		c.mu.Unlock()
		close(cl.done)
		return cl.path, cl.err
	}
}

// Cached returns the path of the cached artifact with SHA-256 digest
// without fetching it, and whether there is one. The file is verified
// when this process fetched or served it before; a copy left by an
// earlier process is returned unverified: the delta built against it is
// checked on the node by the new artifact's SHA-256, so a damaged base
// can only cost a full upload.
func (c *Cache) Cached(digest string) (string, bool) {
	if !ValidDigest(digest) {
		return "", false
	}
	final := filepath.Join(c.blobDir, digest)
	fi, err := os.Stat(final)
	if err != nil || !fi.Mode().IsRegular() {
		return "", false
	}
	return final, true
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

// load returns the cached file for digest, fetching it when it is missing
// or damaged. Only one load per digest runs at a time.
func (c *Cache) load(ctx context.Context, digest string) (string, error) {
	final := filepath.Join(c.blobDir, digest)
	c.mu.Lock()
	verified := c.verified[digest]
	c.mu.Unlock()
	switch ok, err := c.checkCached(final, digest, verified); {
	case err != nil:
		return "", err
	case ok:
		c.mu.Lock()
		c.verified[digest] = true
		c.mu.Unlock()
		c.hits.Inc()
		return final, nil
	}
	c.misses.Inc()
	if err := c.fetch(ctx, digest, final); err != nil {
		return "", err
	}
	c.mu.Lock()
	c.verified[digest] = true
	c.mu.Unlock()
	return final, nil
}

// checkCached reports whether final is a usable copy of digest. An
// unverified file is hashed; a damaged one is removed.
func (c *Cache) checkCached(final, digest string, verified bool) (bool, error) {
	fi, err := os.Stat(final)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("artifact %s: %w", digest, err)
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("artifact %s: %s is not a regular file", digest, final)
	}
	if verified {
		return true, nil
	}
	sum, err := fileSHA256(final)
	if err != nil {
		return false, fmt.Errorf("artifact %s: %w", digest, err)
	}
	if sum == digest {
		return true, nil
	}
	c.cfg.Logger.Warn("cached artifact is damaged; fetching it again", "sha256", digest, "got_sha256", sum)
	if err := os.Remove(final); err != nil {
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

// fetch streams digest into a temporary file, verifies it and renames it
// to final. On any error the temporary file is removed.
func (c *Cache) fetch(ctx context.Context, digest, final string) (err error) {
	tmp, err := os.CreateTemp(c.tmpDir, digest+".*.partial")
	if err != nil {
		return fmt.Errorf("artifact %s: %w", digest, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	log := c.cfg.Logger.With("sha256", digest)
	log.Info("fetching artifact from the control plane")

	st := &fetchState{digest: digest, size: -1, h: sha256.New(), w: tmp}
	for attempt := 0; ; attempt++ {
		before := st.n
		err := c.stream(ctx, st)
		if err == nil {
			break
		}
		var verr *VerifyError
		retry := !errors.As(err, &verr) && ctx.Err() == nil && st.n > before && attempt < c.cfg.MaxResumes
		if !retry {
			return err
		}
		log.Warn("artifact fetch broke; resuming", "offset", st.n, "error", err)
	}
	if st.n != st.size {
		return &VerifyError{Digest: digest, Reason: fmt.Sprintf("truncated: got %d of %d bytes", st.n, st.size)}
	}
	if got := hex.EncodeToString(st.h.Sum(nil)); got != digest {
		return &VerifyError{Digest: digest, Reason: fmt.Sprintf("sha256 mismatch: got %s", got)}
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("artifact %s: %w", digest, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("artifact %s: %w", digest, err)
	}
	if err := os.Chmod(tmp.Name(), 0o400); err != nil {
		return fmt.Errorf("artifact %s: %w", digest, err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("artifact %s: %w", digest, err)
	}
	syncDir(c.blobDir)
	log.Info("artifact cached", "bytes", st.n)
	return nil
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
	n      int64 // bytes written
	h      hash.Hash
	w      io.Writer
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
