package watchhub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outposthq/outpost/controlplane/store"
)

// Defaults for Config.
const (
	// DefaultMaxPerCaller bounds the watches one caller (one identity) may
	// hold at once: a person follows a few rollouts, not hundreds.
	DefaultMaxPerCaller = 10
	// DefaultMaxTotal bounds the watches a control plane serves at once.
	DefaultMaxTotal = 500
)

// PageSize is the most nodes a snapshot or change response carries, and
// the page size of the feeds' caches.
const PageSize = 1000

// maxPageBytes bounds the encoded size of a node page response. grpc-go
// encodes a message into a pooled buffer of the next size up of 256 B, 4,
// 16, 32 KiB or 1 MiB and holds it until the message is written out, so
// a page just over 32 KiB would hold 1 MiB for each watcher whose client
// reads slowly.
const maxPageBytes = 32 << 10

// pageOverhead bounds what a page response spends beyond its page field's
// contents: the revision, and the page field's tag and length.
const pageOverhead = 16

// Errors a Watcher reports.
var (
	// ErrNotFound: the rollout does not exist or was deleted.
	ErrNotFound = errors.New("rollout not found")
	// ErrWatchEnded: the feed's etcd watch ended (etcd lost its leader or
	// is unreachable); the client should resume from its last revision.
	ErrWatchEnded = errors.New("watch ended")
	// ErrClosed: the hub is closed (the control plane is shutting down).
	ErrClosed = errors.New("watch hub closed")
)

// CapError is Join's refusal when a cap is reached.
type CapError struct {
	// Caller is who was refused; empty when the total cap was reached.
	Caller string
	// Limit is the cap reached.
	Limit int
}

func (e *CapError) Error() string {
	if e.Caller != "" {
		return fmt.Sprintf("%s already holds %d rollout watches, the most per caller", e.Caller, e.Limit)
	}
	return fmt.Sprintf("%d rollout watches are open, the most this control plane serves", e.Limit)
}

// Config configures a Hub.
type Config struct {
	// Store is the etcd the feeds read. Required.
	Store *store.Store
	// MaxPerCaller bounds the watchers of one caller; 0 means
	// DefaultMaxPerCaller.
	MaxPerCaller int
	// MaxTotal bounds all watchers; 0 means DefaultMaxTotal.
	MaxTotal int
	// Registerer receives the hub's metrics; nil means none.
	Registerer prometheus.Registerer
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// CheckAndSetDefaults validates the config and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	if c.Store == nil {
		return errors.New("watchhub: Store is required")
	}
	if c.MaxPerCaller < 0 || c.MaxTotal < 0 {
		return fmt.Errorf("watchhub: negative MaxPerCaller %d or MaxTotal %d", c.MaxPerCaller, c.MaxTotal)
	}
	if c.MaxPerCaller == 0 {
		c.MaxPerCaller = DefaultMaxPerCaller
	}
	if c.MaxTotal == 0 {
		c.MaxTotal = DefaultMaxTotal
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Hub hands out Watchers and runs one feed per watched rollout. It is safe
// for concurrent use; Close stops every feed and waits for them.
type Hub struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	ctx     context.Context // parent of the feeds; cancelled by Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup // feed goroutines

	// etcdWatches counts the etcd watches the feeds opened.
	etcdWatches atomic.Int64

	mu        sync.Mutex // guards the fields below
	feeds     map[string]*feed
	perCaller map[string]int
	total     int
	closed    bool
}

// New returns a hub; Close it.
func New(cfg Config) (*Hub, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("watchhub: metrics: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Hub{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "watchhub"),
		metrics:   m,
		ctx:       ctx,
		cancel:    cancel,
		feeds:     map[string]*feed{},
		perCaller: map[string]int{},
	}, nil
}

// Join registers a watcher of rollout id for caller (an identity's
// subject: the caps count per caller). from is the request's
// from_revision: 0 starts with a snapshot, otherwise the watcher sends
// what changed after it. pageSize is the most nodes per response; 0 sends
// one response per node. Join fails with a *CapError over a cap, or
// ErrClosed. The watcher must Leave.
func (h *Hub) Join(caller, id string, from int64, pageSize int) (*Watcher, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return nil, ErrClosed
	case h.perCaller[caller] >= h.cfg.MaxPerCaller:
		h.metrics.refused.WithLabelValues("per_caller").Inc()
		return nil, &CapError{Caller: caller, Limit: h.cfg.MaxPerCaller}
	case h.total >= h.cfg.MaxTotal:
		h.metrics.refused.WithLabelValues("total").Inc()
		return nil, &CapError{Limit: h.cfg.MaxTotal}
	}
	f := h.feeds[id]
	if f == nil || f.failed() {
		f = newFeed(h, id)
		h.feeds[id] = f
		h.metrics.feeds.Set(float64(len(h.feeds)))
		h.wg.Add(1)
		go f.run()
	}
	w := newWatcher(h, f, caller, from, min(max(pageSize, 0), PageSize))
	f.add(w)
	h.total++
	h.perCaller[caller]++
	h.metrics.watchers.Set(float64(h.total))
	return w, nil
}

// leave undoes Join for w; the last watcher of a feed stops it.
func (h *Hub) leave(w *Watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.total--
	if h.perCaller[w.caller]--; h.perCaller[w.caller] == 0 {
		delete(h.perCaller, w.caller)
	}
	h.metrics.watchers.Set(float64(h.total))
	if w.feed.remove(w) == 0 {
		w.feed.cancel()
		h.forgetLocked(w.feed)
	}
}

// forget drops f from the feeds so that the next Join starts a new one.
func (h *Hub) forget(f *feed) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.forgetLocked(f)
}

func (h *Hub) forgetLocked(f *feed) {
	if h.feeds[f.id] == f {
		delete(h.feeds, f.id)
		h.metrics.feeds.Set(float64(len(h.feeds)))
	}
}

// EtcdWatches returns how many etcd watches the feeds have opened: one
// per feed, plus one per restart after etcd compacted what a feed had
// not read yet.
func (h *Hub) EtcdWatches() int64 { return h.etcdWatches.Load() }

// Close stops every feed and waits for them. Watchers then report
// ErrClosed; Join refuses.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
}

// metrics are the hub's Prometheus metrics.
type metrics struct {
	watchers prometheus.Gauge
	feeds    prometheus.Gauge
	refused  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_rollout_watchers",
			Help: "WatchRollout streams this control plane serves.",
		}),
		feeds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_rollout_watch_feeds",
			Help: "Rollouts watched on this control plane: one etcd watch and one cached copy each.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_rollout_watches_refused_total",
			Help: "WatchRollout calls refused by a cap, by cap (per_caller, total).",
		}, []string{"cap"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.watchers, m.feeds, m.refused} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
