package artifactcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// fakeStore is a real gRPC GatewayService serving FetchArtifact from memory,
// with faults the test switches on.
type fakeStore struct {
	outpostv1.UnimplementedGatewayServiceServer

	mu       sync.Mutex
	blobs    map[string][]byte // guarded by mu
	calls    []int64           // guarded by mu: offsets of FetchArtifact calls
	corrupt  bool              // guarded by mu: flip a byte of the data sent
	truncate int               // guarded by mu: send this many fewer bytes
	extra    int               // guarded by mu: send this many more bytes
	cutOnce  int64             // guarded by mu: >0: the next call breaks after this many bytes
	gate     chan struct{}     // guarded by mu: when set, calls wait for it to close
	midGate  chan struct{}     // guarded by mu: when set, calls wait for it after the metadata
}

func (f *fakeStore) FetchArtifact(req *outpostv1.FetchArtifactRequest, s grpc.ServerStreamingServer[outpostv1.FetchArtifactResponse]) error {
	f.mu.Lock()
	f.calls = append(f.calls, req.GetOffset())
	data, ok := f.blobs[req.GetSha256()]
	corrupt, truncate, extra, cut, gate, midGate := f.corrupt, f.truncate, f.extra, f.cutOnce, f.gate, f.midGate
	f.cutOnce = 0
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-s.Context().Done():
			return s.Context().Err()
		}
	}
	if !ok {
		return status.Error(codes.NotFound, "no such artifact")
	}
	size := int64(len(data))
	data = bytes.Clone(data)
	if corrupt {
		data[len(data)/2] ^= 0xff
	}
	data = data[:len(data)-truncate]
	data = append(data, bytes.Repeat([]byte{'x'}, extra)...)
	data = data[req.GetOffset():]
	first := &outpostv1.FetchArtifactResponse{Artifact: &outpostv1.Artifact{Sha256: req.GetSha256(), Size: size, Name: "a.tar.gz"}}
	if err := s.Send(first); err != nil {
		return err
	}
	if midGate != nil {
		select {
		case <-midGate:
		case <-s.Context().Done():
			return s.Context().Err()
		}
	}
	if cut > 0 {
		if err := s.Send(&outpostv1.FetchArtifactResponse{Chunk: data[:cut]}); err != nil {
			return err
		}
		return status.Error(codes.Unavailable, "connection reset (test)")
	}
	for len(data) > 0 {
		n := min(len(data), 1000)
		if err := s.Send(&outpostv1.FetchArtifactResponse{Chunk: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func (f *fakeStore) add(data []byte) string {
	sum := sha256.Sum256(data)
	d := hex.EncodeToString(sum[:])
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.blobs == nil {
		f.blobs = make(map[string][]byte)
	}
	f.blobs[d] = data
	return d
}

func (f *fakeStore) offsets() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int64(nil), f.calls...)
}

func (f *fakeStore) set(fn func(f *fakeStore)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

type env struct {
	store *fakeStore
	dir   string
	cache *Cache
}

func newEnv(t *testing.T) *env {
	t.Helper()
	store := &fakeStore{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	outpostv1.RegisterGatewayServiceServer(srv, store)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e := &env{store: store, dir: t.TempDir()}
	e.cache = e.open(t, outpostv1.NewGatewayServiceClient(conn))
	return e
}

func (e *env) open(t *testing.T, f Fetcher) *Cache {
	t.Helper()
	c, err := New(Config{Dir: e.dir, Fetcher: f, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// entries lists every file under the cache directory.
func (e *env) entries(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"sha256", "tmp"} {
		des, err := os.ReadDir(filepath.Join(e.dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range des {
			out = append(out, sub+"/"+de.Name())
		}
	}
	return out
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func TestGetFetchesOnceThenHits(t *testing.T) {
	e := newEnv(t)
	data := payload(5000)
	d := e.store.add(data)
	ctx := context.Background()
	for i := range 3 {
		p, err := e.cache.Get(ctx, d)
		if err != nil {
			t.Fatalf("Get #%d: %v", i, err)
		}
		if want := filepath.Join(e.dir, "sha256", d); p.Path() != want {
			t.Errorf("Get #%d = %q, want %q", i, p.Path(), want)
		}
		got, err := os.ReadFile(p.Path())
		p.Release()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("Get #%d: cached content differs from the artifact", i)
		}
	}
	if got := len(e.store.offsets()); got != 1 {
		t.Errorf("FetchArtifact calls = %d, want 1", got)
	}
	if got := counterValue(t, e.cache.misses); got != 1 {
		t.Errorf("misses = %v, want 1", got)
	}
	if got := counterValue(t, e.cache.hits); got != 2 {
		t.Errorf("hits = %v, want 2", got)
	}
	if got := counterValue(t, e.cache.fetched); got != 5000 {
		t.Errorf("fetched bytes = %v, want 5000", got)
	}

	// A later process reuses the file: it re-hashes it once, no fetch.
	e2 := e.open(t, failFetcher{})
	p, err := e2.Get(ctx, d)
	if err != nil {
		t.Fatalf("Get from a new Cache: %v", err)
	}
	p.Release()
}

// failFetcher fails the test's expectations loudly if it is ever used.
type failFetcher struct{ Fetcher }

func (failFetcher) FetchArtifact(context.Context, *outpostv1.FetchArtifactRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[outpostv1.FetchArtifactResponse], error) {
	return nil, errors.New("unexpected fetch")
}

func TestConcurrentGetsShareOneFetch(t *testing.T) {
	e := newEnv(t)
	d := e.store.add(payload(3000))
	gate := make(chan struct{})
	e.store.set(func(f *fakeStore) { f.gate = gate })

	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			p, err := e.cache.Get(context.Background(), d)
			if err == nil {
				p.Release()
			}
			errs <- err
		})
	}
	// Release the fetch only once every other Get is waiting for it, so
	// the test really has n concurrent Gets of one digest.
	waitFor(t, func() bool {
		e.cache.mu.Lock()
		defer e.cache.mu.Unlock()
		cl := e.cache.inflight[d]
		return cl != nil && cl.waiters == n-1
	})
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Get: %v", err)
		}
	}
	if got := len(e.store.offsets()); got != 1 {
		t.Errorf("FetchArtifact calls = %d, want 1", got)
	}
}

func TestOwnerGivesUpWaiterTakesOver(t *testing.T) {
	e := newEnv(t)
	d := e.store.add(payload(100))
	gate := make(chan struct{})
	e.store.set(func(f *fakeStore) { f.gate = gate })

	ownerCtx, cancelOwner := context.WithCancel(context.Background())
	ownerErr := make(chan error, 1)
	go func() {
		_, err := e.cache.Get(ownerCtx, d)
		ownerErr <- err
	}()
	waitFor(t, func() bool { return len(e.store.offsets()) == 1 })
	waiterErr := make(chan error, 1)
	go func() {
		p, err := e.cache.Get(context.Background(), d)
		if err == nil {
			p.Release()
		}
		waiterErr <- err
	}()
	waitFor(t, func() bool {
		e.cache.mu.Lock()
		defer e.cache.mu.Unlock()
		cl := e.cache.inflight[d]
		return cl != nil && cl.waiters == 1
	})
	cancelOwner()
	if err := <-ownerErr; !errors.Is(err, context.Canceled) {
		t.Errorf("owner Get = %v, want context.Canceled", err)
	}
	waitFor(t, func() bool { return len(e.store.offsets()) == 2 })
	close(gate)
	if err := <-waiterErr; err != nil {
		t.Errorf("waiter Get = %v, want success after taking the fetch over", err)
	}
}

func TestBadFetchLeavesNothing(t *testing.T) {
	tests := []struct {
		name  string
		fault func(f *fakeStore)
		want  string
	}{
		{"corrupted", func(f *fakeStore) { f.corrupt = true }, "sha256 mismatch"},
		{"truncated", func(f *fakeStore) { f.truncate = 10 }, "truncated: got 1990 of 2000 bytes"},
		{"too long", func(f *fakeStore) { f.extra = 1 }, "more than the announced 2000 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			d := e.store.add(payload(2000))
			e.store.set(tt.fault)
			_, err := e.cache.Get(context.Background(), d)
			var verr *VerifyError
			if !errors.As(err, &verr) || !bytes.Contains([]byte(err.Error()), []byte(tt.want)) {
				t.Fatalf("Get = %v, want a *VerifyError containing %q", err, tt.want)
			}
			if got := e.entries(t); len(got) != 0 {
				t.Errorf("cache holds %q after a bad fetch, want nothing", got)
			}
			// The fault was in transit: a good fetch afterwards succeeds.
			e.store.set(func(f *fakeStore) { f.corrupt, f.truncate, f.extra = false, 0, 0 })
			p, err := e.cache.Get(context.Background(), d)
			if err != nil {
				t.Fatalf("Get after the fault cleared: %v", err)
			}
			p.Release()
		})
	}
}

func TestNotFound(t *testing.T) {
	e := newEnv(t)
	d := hex.EncodeToString(make([]byte, 32))
	_, err := e.cache.Get(context.Background(), d)
	if status.Code(errors.Unwrap(err)) != codes.NotFound {
		t.Errorf("Get = %v, want a wrapped NotFound", err)
	}
	if got := e.entries(t); len(got) != 0 {
		t.Errorf("cache holds %q, want nothing", got)
	}
}

func TestBadDigestNeverReachesAPath(t *testing.T) {
	e := newEnv(t)
	good := hex.EncodeToString(make([]byte, 32))
	for _, d := range []string{
		"",
		"../../etc/passwd",
		good[:63],
		good + "0",
		"A" + good[1:],
		"g" + good[1:],
		"/" + good[1:],
	} {
		_, err := e.cache.Get(context.Background(), d)
		if !errors.Is(err, ErrBadDigest) {
			t.Errorf("Get(%q) = %v, want ErrBadDigest", d, err)
		}
	}
	if got := e.store.offsets(); len(got) != 0 {
		t.Errorf("FetchArtifact called %d times for bad digests, want 0", len(got))
	}
}

func TestResumeAfterBrokenStream(t *testing.T) {
	e := newEnv(t)
	data := payload(4000)
	d := e.store.add(data)
	e.store.set(func(f *fakeStore) { f.cutOnce = 1500 })
	p, err := e.cache.Get(context.Background(), d)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	defer p.Release()
	got, _ := os.ReadFile(p.Path())
	if !bytes.Equal(got, data) {
		t.Error("resumed artifact differs from the original")
	}
	if got, want := fmt.Sprint(e.store.offsets()), "[0 1500]"; got != want {
		t.Errorf("fetch offsets = %s, want %s", got, want)
	}
}

func TestDamagedCacheFileIsFetchedAgain(t *testing.T) {
	e := newEnv(t)
	data := payload(1000)
	d := e.store.add(data)
	p, err := e.cache.Get(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	p.Release()
	if err := os.Chmod(p.Path(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Path(), []byte("bit rot"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A stale partial file from a crashed process is cleaned up too.
	if err := os.WriteFile(filepath.Join(e.dir, "tmp", d+".1.partial"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	c2 := e.open(t, e.cache.cfg.Fetcher)
	p, err = c2.Get(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release()
	if got, _ := os.ReadFile(p.Path()); !bytes.Equal(got, data) {
		t.Error("damaged file was not replaced by the artifact")
	}
	if got := len(e.store.offsets()); got != 2 {
		t.Errorf("FetchArtifact calls = %d, want 2", got)
	}
	if got := e.entries(t); len(got) != 1 {
		t.Errorf("cache holds %q, want only the artifact", got)
	}
}

func TestConfig(t *testing.T) {
	for _, cfg := range []Config{{}, {Dir: t.TempDir()}, {Fetcher: failFetcher{}}, {Dir: t.TempDir(), Fetcher: failFetcher{}, MaxBytes: -1}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not met within 10s")
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
