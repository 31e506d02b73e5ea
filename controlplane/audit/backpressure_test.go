package audit

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// heldWrites holds the audit log's write transactions in a real etcd
// client (storetest.DelayedKV) until open is called: a stuck etcd.
type heldWrites struct {
	held    chan struct{} // receives, if there is room, each time a write is held
	release chan struct{}
	once    sync.Once
}

func holdWrites(s *store.Store) *heldWrites {
	h := &heldWrites{held: make(chan struct{}, 1), release: make(chan struct{})}
	c := s.Client()
	c.KV = &storetest.DelayedKV{KV: c.KV, Prefix: store.AuditPrefix, Wait: func(ctx context.Context) error {
		select {
		case h.held <- struct{}{}:
		default:
		}
		select {
		case <-h.release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	return h
}

// open lets every write through from now on.
func (h *heldWrites) open() { h.once.Do(func() { close(h.release) }) }

// waitHeld waits until the writer is stuck in a write.
func (h *heldWrites) waitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-h.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer made no write in 10s")
	}
}

// startHeldLog starts a Log with metrics on a fresh etcd whose audit
// writes are held; cleanup opens them and closes the Log.
func startHeldLog(t *testing.T, cfg Config) (*Log, *Metrics, *heldWrites) {
	t.Helper()
	cfg.Store = storetest.Open(t)
	h := holdWrites(cfg.Store)
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Metrics = m
	if cfg.Logger == nil {
		cfg.Logger = storetest.Logger()
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.open()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l, m, h
}

// waitWaiters waits until n callers wait for space in l's queue.
func waitWaiters(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := 0; ; i++ {
		l.mu.Lock()
		w := l.waiters
		l.mu.Unlock()
		if w == n {
			return
		}
		if i == 10000 {
			t.Fatalf("%d callers wait for space after 10s, want %d", w, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// returned waits for the outcome of a call that should return now.
func returned(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not return in 10s")
		return nil
	}
}

func metricOf(t *testing.T, c prometheus.Metric) *dto.Metric {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return &m
}

func depth(t *testing.T, m *Metrics) float64 { return metricOf(t, m.QueueDepth).GetGauge().GetValue() }

func countEntries(t *testing.T, ctx context.Context, s *store.Store) int64 {
	t.Helper()
	resp, err := s.Client().Get(ctx, store.AuditPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// TestEnqueueWaitsForSpace fills the queue of a log whose etcd writes are
// stuck: Enqueue waits instead of dropping the entry, returns once a
// write frees space, and the entry is written. The depth gauge follows
// the queue.
func TestEnqueueWaitsForSpace(t *testing.T) {
	l, m, h := startHeldLog(t, Config{QueueSize: 4, BatchDelay: time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if got := metricOf(t, m.QueueCapacity).GetGauge().GetValue(); got != 4 {
		t.Errorf("capacity gauge = %v, want 4", got)
	}
	for i := range 3 {
		if err := l.Enqueue(ctx, &outpostv1.AuditEntry{Action: "early"}); err != nil {
			t.Fatalf("Enqueue #%d: %v", i, err)
		}
	}
	// Entries leave the queue when their write succeeds, never before.
	h.waitHeld(t)
	if got := depth(t, m); got != 3 {
		t.Errorf("depth gauge = %v with 3 entries queued, want 3", got)
	}
	if err := l.Enqueue(ctx, &outpostv1.AuditEntry{Action: "fills"}); err != nil {
		t.Fatalf("Enqueue into the last free slot: %v", err)
	}
	if got := depth(t, m); got != 4 {
		t.Errorf("depth gauge = %v with the queue full, want 4", got)
	}

	done := make(chan error, 1)
	go func() { done <- l.Enqueue(ctx, &outpostv1.AuditEntry{Action: "waits"}) }()
	waitWaiters(t, l, 1)
	select {
	case err := <-done:
		t.Fatalf("Enqueue into a full queue returned %v before any write", err)
	default:
	}

	h.open()
	if err := returned(t, done); err != nil {
		t.Fatalf("Enqueue after space freed = %v", err)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := countEntries(t, ctx, l.cfg.Store); got != 5 {
		t.Errorf("%d entries written, want all 5", got)
	}
	if got := depth(t, m); got != 0 {
		t.Errorf("depth gauge = %v after everything was written, want 0", got)
	}
	if got := metricOf(t, m.QueueWait).GetHistogram().GetSampleCount(); got != 1 {
		t.Errorf("queue waits observed = %d, want 1", got)
	}
	if got := metricOf(t, m.NotQueued).GetCounter().GetValue(); got != 0 {
		t.Errorf("not-queued counter = %v, want 0", got)
	}
}

// TestFullQueueEndsWhenTheCallerGivesUp checks the ways out of a wait for
// space while etcd is stuck: the caller's context ending (the engine's
// leadership term), for Enqueue, Append and the engine's Record calls,
// which log it loudly; and Close, so that a shutdown never hangs on a
// waiting caller.
func TestFullQueueEndsWhenTheCallerGivesUp(t *testing.T) {
	logs := &messages{}
	l, m, h := startHeldLog(t, Config{QueueSize: 2, BatchDelay: time.Millisecond, Logger: slog.New(logs)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 2 {
		if err := l.Enqueue(ctx, &outpostv1.AuditEntry{Action: "queued"}); err != nil {
			t.Fatal(err)
		}
	}
	h.waitHeld(t)

	ectx, ecancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Enqueue(ectx, &outpostv1.AuditEntry{Action: "given up"}) }()
	waitWaiters(t, l, 1)
	ecancel()
	if err := returned(t, done); !errors.Is(err, context.Canceled) {
		t.Errorf("Enqueue when its context ended = %v, want context.Canceled", err)
	}

	short, scancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer scancel()
	if err := l.Append(short, &outpostv1.AuditEntry{Action: "call"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Append to a full queue = %v, want DeadlineExceeded", err)
	}

	l.RecordNodeResult(ectx, "r-1", "n1", outpostv1.NodeState_NODE_STATE_SUCCEEDED, outpostv1.Step_STEP_UNLOCK, "", "gw")
	if got := logs.count("audit entry not recorded"); got != 1 {
		t.Errorf("%d errors logged for a node result not recorded, want 1", got)
	}
	if got := metricOf(t, m.NotQueued).GetCounter().GetValue(); got != 3 {
		t.Errorf("not-queued counter = %v, want 3", got)
	}

	go func() { done <- l.Enqueue(ctx, &outpostv1.AuditEntry{Action: "at close"}) }()
	waitWaiters(t, l, 1)
	closed := make(chan error, 1)
	go func() { closed <- l.Close(ctx) }()
	if err := returned(t, done); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue waiting when the log closed = %v, want ErrClosed", err)
	}
	// Close writes what is queued once etcd answers again.
	h.open()
	if err := returned(t, closed); err != nil {
		t.Errorf("Close: %v", err)
	}
	if got := countEntries(t, ctx, l.cfg.Store); got != 2 {
		t.Errorf("%d entries written, want the 2 queued", got)
	}
}

// TestFullQueueIsWrittenAtOnce checks that a queue smaller than a batch
// does not wait BatchDelay for company once it is full: a caller waits.
func TestFullQueueIsWrittenAtOnce(t *testing.T) {
	l, _, h := startHeldLog(t, Config{QueueSize: 8, BatchDelay: time.Hour})
	h.open()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 9 {
		if err := l.Enqueue(ctx, &outpostv1.AuditEntry{Action: "e"}); err != nil {
			t.Fatalf("Enqueue #%d: %v", i, err)
		}
	}
}

// messages is a slog.Handler that counts records by message.
type messages struct {
	mu     sync.Mutex
	counts map[string]int
}

func (h *messages) Enabled(context.Context, slog.Level) bool { return true }

func (h *messages) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.counts == nil {
		h.counts = map[string]int{}
	}
	h.counts[r.Message]++
	return nil
}

func (h *messages) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *messages) WithGroup(string) slog.Handler      { return h }

func (h *messages) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[msg]
}
