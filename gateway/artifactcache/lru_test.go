package artifactcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// testClock is a clock that moves a minute on every reading, so that
// every use of an artifact gets its own modification time.
type testClock struct {
	mu  sync.Mutex
	now time.Time // guarded by mu
}

func newTestClock() *testClock {
	return &testClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Minute)
	return c.now
}

// logBuffer collects a cache's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// openWith opens a Cache on e's directory and store with cfg's limit,
// clock and logger.
func (e *env) openWith(t *testing.T, cfg Config) *Cache {
	t.Helper()
	cfg.Dir = e.dir
	if cfg.Fetcher == nil {
		cfg.Fetcher = e.cache.cfg.Fetcher
	}
	cfg.Registerer = prometheus.NewRegistry()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// artifacts adds n distinct artifacts of size bytes to the store.
func (e *env) artifacts(n, size int) []string {
	var ds []string
	for i := range n {
		b := payload(size)
		b[0] = byte(i)
		ds = append(ds, e.store.add(b))
	}
	return ds
}

// onDisk lists the digests whose files are in the cache, sorted.
func (e *env) onDisk(t *testing.T) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(e.dir, "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

// use Gets digest and releases it at once.
func use(t *testing.T, c *Cache, digest string) {
	t.Helper()
	p, err := c.Get(context.Background(), digest)
	if err != nil {
		t.Fatalf("Get %.8s: %v", digest, err)
	}
	p.Release()
}

func sorted(ds ...string) []string {
	return slices.Sorted(slices.Values(ds))
}

func short(ds []string) string {
	var s []string
	for _, d := range ds {
		s = append(s, d[:8])
	}
	return strings.Join(s, " ")
}

func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// checkAccount checks the cache's metrics against what it should hold.
func checkAccount(t *testing.T, c *Cache, entries, bytes, evictions int) {
	t.Helper()
	if got := gaugeValue(t, c.count); got != float64(entries) {
		t.Errorf("entries gauge = %v, want %d", got, entries)
	}
	if got := gaugeValue(t, c.bytes); got != float64(bytes) {
		t.Errorf("bytes gauge = %v, want %d", got, bytes)
	}
	if got := counterValue(t, c.evictions); got != float64(evictions) {
		t.Errorf("evictions = %v, want %d", got, evictions)
	}
}

// TestEvictsLeastRecentlyUsed: beyond its limit the cache removes the
// artifact used longest ago, where a Get and a delta base (Cached) are
// both uses, and fetches it again when it is asked for.
func TestEvictsLeastRecentlyUsed(t *testing.T) {
	e := newEnv(t)
	c := e.openWith(t, Config{MaxBytes: 2500, Now: newTestClock().Now})
	ds := e.artifacts(4, 1000)
	a, b, cc, d := ds[0], ds[1], ds[2], ds[3]

	use(t, c, a)
	use(t, c, b)
	use(t, c, a) // a is now more recent than b
	use(t, c, cc)
	if got, want := e.onDisk(t), sorted(a, cc); !slices.Equal(got, want) {
		t.Fatalf("after a, b, a, c with room for two: cache holds %s, want %s (b evicted)", short(got), short(want))
	}
	checkAccount(t, c, 2, 2000, 1)

	// A delta base is a use too: a (older than c) becomes the newest.
	p, ok := c.Cached(a)
	if !ok {
		t.Fatalf("Cached(a) = false, want the cached artifact")
	}
	p.Release()
	use(t, c, d)
	if got, want := e.onDisk(t), sorted(a, d); !slices.Equal(got, want) {
		t.Fatalf("after Cached(a), d: cache holds %s, want %s (c evicted)", short(got), short(want))
	}
	checkAccount(t, c, 2, 2000, 2)
	if _, ok := c.Cached(cc); ok {
		t.Errorf("Cached(c) = true after c was evicted")
	}

	misses := counterValue(t, c.misses)
	use(t, c, b)
	if got := counterValue(t, c.misses); got != misses+1 {
		t.Errorf("misses = %v after getting the evicted b, want %v", got, misses+1)
	}
	if got := e.entries(t); len(got) != 2 {
		t.Errorf("cache directory holds %q, want two artifacts and nothing in tmp", got)
	}
}

// TestPinnedNotEvicted: an artifact being read stays however far over its
// limit the cache goes, and goes when it is released.
func TestPinnedNotEvicted(t *testing.T) {
	e := newEnv(t)
	logs := &logBuffer{}
	c := e.openWith(t, Config{MaxBytes: 1500, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	ds := e.artifacts(2, 1000)
	a, b := ds[0], ds[1]

	pa, err := c.Get(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	fa, err := os.Open(pa.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	pb, err := c.Get(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	// Both in use: 2000 bytes for a limit of 1500.
	if got, want := e.onDisk(t), sorted(a, b); !slices.Equal(got, want) {
		t.Fatalf("with both pinned the cache holds %s, want %s", short(got), short(want))
	}
	checkAccount(t, c, 2, 2000, 0)
	if !strings.Contains(logs.String(), "over its limit") {
		t.Errorf("no warning that the cache is over its limit in the log:\n%s", logs.String())
	}
	if got, err := io.ReadAll(fa); err != nil || sha(got) != a {
		t.Errorf("reading the pinned artifact: %v, sha256 %.8s, want %.8s", err, sha(got), a)
	}

	pa.Release()
	pa.Release() // a second Release does nothing
	if got, want := e.onDisk(t), []string{b}; !slices.Equal(got, want) {
		t.Fatalf("after releasing a the cache holds %s, want %s", short(got), short(want))
	}
	checkAccount(t, c, 1, 1000, 1)
	pb.Release()
	if got, want := e.onDisk(t), []string{b}; !slices.Equal(got, want) {
		t.Errorf("after releasing b (within the limit) the cache holds %s, want %s", short(got), short(want))
	}
}

// TestOversizeArtifact: an artifact larger than the whole limit is still
// served, to every concurrent user, and removed when the last of them is
// done, with a warning.
func TestOversizeArtifact(t *testing.T) {
	e := newEnv(t)
	logs := &logBuffer{}
	c := e.openWith(t, Config{MaxBytes: 1000, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	small := e.artifacts(1, 500)[0]
	big := e.store.add(payload(3000))
	use(t, c, small)

	p1, err := c.Get(context.Background(), big)
	if err != nil {
		t.Fatalf("Get of an artifact larger than the limit: %v", err)
	}
	p2, err := c.Get(context.Background(), big)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := e.onDisk(t), []string{big}; !slices.Equal(got, want) {
		t.Errorf("with the large artifact in use the cache holds %s, want %s (the small one evicted)", short(got), short(want))
	}
	checkAccount(t, c, 1, 3000, 1)
	if !strings.Contains(logs.String(), "larger than the cache limit") {
		t.Errorf("no warning about the artifact larger than the limit in the log:\n%s", logs.String())
	}
	p1.Release()
	if got, err := os.ReadFile(p2.Path()); err != nil || sha(got) != big {
		t.Fatalf("the large artifact was removed while still in use: %v", err)
	}
	p2.Release()
	if got := e.onDisk(t); len(got) != 0 {
		t.Errorf("after its last use the cache holds %s, want nothing", short(got))
	}
	checkAccount(t, c, 0, 0, 2)
	use(t, c, big)
	if got := counterValue(t, c.misses); got != 3 {
		t.Errorf("misses = %v, want 3 (small, big, big again)", got)
	}
}

// TestRestartRescansAndTrims: a new process finds the artifacts an earlier
// one left, ordered by their last use (not by when they were fetched),
// removes what a crash left half-done, and trims to a smaller limit.
func TestRestartRescansAndTrims(t *testing.T) {
	e := newEnv(t)
	clock := newTestClock()
	c := e.openWith(t, Config{MaxBytes: 10000, Now: clock.Now})
	ds := e.artifacts(3, 1000)
	a, b, cc := ds[0], ds[1], ds[2]
	use(t, c, a)
	use(t, c, b)
	use(t, c, cc)
	use(t, c, a) // fetched first, used last
	fi, err := os.Stat(filepath.Join(e.dir, "sha256", a))
	if err != nil {
		t.Fatal(err)
	}
	if want := clock.now; !fi.ModTime().Equal(want) {
		t.Errorf("a's modification time = %v, want its last use %v", fi.ModTime(), want)
	}
	// What a crash leaves: a fetch and an eviction half-done, and a
	// stray file that is no artifact (ignored, not counted).
	for _, name := range []string{"tmp/" + b + ".123.partial", "tmp/" + cc + ".7.evicted"} {
		if err := os.WriteFile(filepath.Join(e.dir, name), payload(400), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(e.dir, "sha256", "notes.txt"), payload(400), 0o600); err != nil {
		t.Fatal(err)
	}

	logs := &logBuffer{}
	c2 := e.openWith(t, Config{MaxBytes: 2500, Fetcher: failFetcher{}, Now: clock.Now, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if got, want := e.onDisk(t), sorted(a, cc, "notes.txt"); !slices.Equal(got, want) {
		t.Fatalf("after a restart with room for two the cache holds %q, want %q (b, used longest ago, evicted)", got, want)
	}
	if got := e.entries(t); slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "tmp/") }) {
		t.Errorf("tmp still holds files after the restart: %q", got)
	}
	checkAccount(t, c2, 2, 2000, 1)
	if !strings.Contains(logs.String(), "not an artifact") {
		t.Errorf("no warning about notes.txt in the log:\n%s", logs.String())
	}
	// The survivors are served without the control plane (failFetcher).
	use(t, c2, a)
	use(t, c2, cc)

	// A restart keeps the order: with c now the oldest use, a new
	// artifact pushes out c, not a.
	c3 := e.openWith(t, Config{MaxBytes: 2500, Now: clock.Now})
	use(t, c3, a)
	use(t, c3, b)
	if got, want := e.onDisk(t), sorted(a, b, "notes.txt"); !slices.Equal(got, want) {
		t.Errorf("after a restart, a, b: cache holds %q, want %q", got, want)
	}
}

// TestConcurrentGetAndEvict: many deployments getting, reading and
// releasing artifacts, and using others as delta bases, in a cache with
// room for few of them, never see a file vanish or change under them,
// and leave the cache within its limit with nothing astray. Run with
// -race.
func TestConcurrentGetAndEvict(t *testing.T) {
	e := newEnv(t)
	const size, limit = 2000, 5000
	c := e.openWith(t, Config{MaxBytes: limit})
	ds := e.artifacts(8, size)

	const workers, rounds = 12, 30
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				d := ds[(w*7+r*3)%len(ds)]
				p, err := c.Get(context.Background(), d)
				if err != nil {
					errs <- fmt.Errorf("Get %.8s: %w", d, err)
					continue
				}
				base, ok := c.Cached(ds[(w+r)%len(ds)])
				for _, q := range []*Pin{p, base} {
					if q == nil {
						continue
					}
					b, err := os.ReadFile(q.Path())
					if err != nil {
						errs <- fmt.Errorf("read a pinned artifact: %w", err)
					} else if got := sha(b); got != filepath.Base(q.Path()) {
						errs <- fmt.Errorf("pinned artifact %.8s holds %.8s", filepath.Base(q.Path()), got)
					}
				}
				if ok {
					base.Release()
				}
				p.Release()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(e.onDisk(t)); got*size > limit {
		t.Errorf("with nothing in use the cache holds %d artifacts (%d bytes), limit %d", got, got*size, limit)
	}
	c.mu.Lock()
	total, n := c.total, len(c.entries)
	c.mu.Unlock()
	if got := e.entries(t); len(got) != n || total != int64(n*size) {
		t.Errorf("cache directory holds %q; the index counts %d entries, %d bytes", got, n, total)
	}
	if counterValue(t, c.evictions) == 0 {
		t.Error("no evictions: the test did not exercise them")
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestFetchMakesRoomFirst: a fetch counts against the limit from the
// moment its size is announced, so the cache evicts before the bytes
// arrive and the disk never holds the limit plus a fetch. A failed fetch
// gives its room back.
func TestFetchMakesRoomFirst(t *testing.T) {
	e := newEnv(t)
	c := e.openWith(t, Config{MaxBytes: 2500})
	ds := e.artifacts(3, 1000)
	a, b, cc := ds[0], ds[1], ds[2]
	use(t, c, a)
	use(t, c, b)
	gate := make(chan struct{})
	e.store.set(func(f *fakeStore) { f.midGate = gate })
	done := make(chan error, 1)
	go func() {
		p, err := c.Get(context.Background(), cc)
		if err == nil {
			p.Release()
		}
		done <- err
	}()
	waitFor(t, func() bool { return slices.Equal(e.onDisk(t), []string{b}) })
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := e.onDisk(t), sorted(b, cc); !slices.Equal(got, want) {
		t.Errorf("after the fetch of c the cache holds %s, want %s", short(got), short(want))
	}

	// A fetch that fails verification gives back what it reserved.
	e.store.set(func(f *fakeStore) { f.midGate, f.corrupt = nil, true })
	if _, err := c.Get(context.Background(), a); err == nil {
		t.Fatal("Get of a corrupted fetch succeeded")
	}
	c.mu.Lock()
	reserved := c.reserved
	c.mu.Unlock()
	if reserved != 0 {
		t.Errorf("reserved = %d after the fetches ended, want 0", reserved)
	}
}

// TestLimitAboveDiskWarns: an absurd limit is accepted (it bounds
// nothing) and the log says so at start.
func TestLimitAboveDiskWarns(t *testing.T) {
	e := newEnv(t)
	logs := &logBuffer{}
	e.openWith(t, Config{MaxBytes: 1 << 62, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if !strings.Contains(logs.String(), "larger than its file system") {
		t.Errorf("no warning about a limit above the disk's size in the log:\n%s", logs.String())
	}
	logs2 := &logBuffer{}
	e.openWith(t, Config{MaxBytes: 1 << 20, Logger: slog.New(slog.NewTextHandler(logs2, nil))})
	if strings.Contains(logs2.String(), "larger than its file system") {
		t.Errorf("warning about a 1 MiB limit:\n%s", logs2.String())
	}
}
