package audit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/outposthq/outpost/controlplane/audit"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var t0 = time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// clock is a settable clock for Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock(t time.Time) *clock { return &clock{now: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// openLog starts a Log on s, closed when the test ends.
func openLog(t *testing.T, s *store.Store, cfg audit.Config) *audit.Log {
	t.Helper()
	cfg.Store = s
	if cfg.Logger == nil {
		cfg.Logger = storetest.Logger()
	}
	l, err := audit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

// clearAudit deletes every audit entry, so subtests sharing one etcd start
// from an empty log.
func clearAudit(t *testing.T, s *store.Store) {
	t.Helper()
	for _, prefix := range []string{store.AuditPrefix, store.AuditIndexPrefix, store.AuditCheckpointPrefix} {
		if _, err := s.Client().Delete(ctxT(t), prefix, clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
	}
}

func entry(action, rollout string) *outpostv1.AuditEntry {
	return &outpostv1.AuditEntry{Action: action, RolloutId: rollout, Result: "OK", Actor: "alice",
		ActorKind: outpostv1.AuditActorKind_AUDIT_ACTOR_KIND_USER}
}

// listAll reads every entry matching q through List with pages of size.
func listAll(t *testing.T, l *audit.Log, q audit.Query, size int) []*outpostv1.AuditEntry {
	t.Helper()
	var all []*outpostv1.AuditEntry
	token := ""
	for range 1000 {
		page, next, err := l.List(ctxT(t), q, size, token)
		if err != nil {
			t.Fatalf("List(page %q): %v", token, err)
		}
		if len(page) > size {
			t.Fatalf("List returned %d entries, page size %d", len(page), size)
		}
		all = append(all, page...)
		if next == "" {
			return all
		}
		token = next
	}
	t.Fatal("List: too many pages")
	return nil
}

// rawKeys returns the audit keys in etcd, in order.
func rawKeys(t *testing.T, s *store.Store) []string {
	t.Helper()
	resp, err := s.Client().Get(ctxT(t), store.AuditPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// checkOrder checks that entries have sequences first, first+1, ... and
// times that never go backwards, and that their keys are exactly keys.
func checkOrder(t *testing.T, entries []*outpostv1.AuditEntry, first int64) {
	t.Helper()
	for i, e := range entries {
		if want := first + int64(i); e.GetSequence() != want {
			t.Fatalf("entry %d has sequence %d, want %d", i, e.GetSequence(), want)
		}
		if i > 0 && e.GetTime().AsTime().Before(entries[i-1].GetTime().AsTime()) {
			t.Fatalf("entry %d time %v is before entry %d's %v", i, e.GetTime().AsTime(), i-1, entries[i-1].GetTime().AsTime())
		}
	}
}

func TestAppendListWatch(t *testing.T) {
	s := storetest.Open(t)

	t.Run("OrderAndPagination", func(t *testing.T) {
		clearAudit(t, s)
		clk := newClock(t0)
		l := openLog(t, s, audit.Config{Now: clk.Now})
		ctx := ctxT(t)
		for i := range 10 {
			rollout := "r-1"
			if i%2 == 1 {
				rollout = "r-2"
			}
			e := entry(fmt.Sprintf("a%d", i), rollout)
			if i%3 == 0 {
				if err := l.Append(ctx, e); err != nil {
					t.Fatalf("Append: %v", err)
				}
				if e.GetSequence() == 0 || e.GetTime() == nil {
					t.Errorf("Append left sequence %d, time %v unset", e.GetSequence(), e.GetTime())
				}
			} else if err := l.Enqueue(ctx, e); err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			if i != 4 { // two entries in the same nanosecond: seq orders them
				clk.Add(time.Millisecond)
			}
		}
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		all := listAll(t, l, audit.Query{}, 100)
		if len(all) != 10 {
			t.Fatalf("List returned %d entries, want 10", len(all))
		}
		checkOrder(t, all, 1)
		for i, e := range all {
			if want := fmt.Sprintf("a%d", i); e.GetAction() != want {
				t.Errorf("entry %d action %q, want %q (queue order)", i, e.GetAction(), want)
			}
			ms := i
			if i >= 5 {
				ms = i - 1
			}
			if want := t0.Add(time.Duration(ms) * time.Millisecond); !e.GetTime().AsTime().Equal(want) {
				t.Errorf("entry %d time %v, want %v (the clock at append)", i, e.GetTime().AsTime(), want)
			}
		}
		keys := rawKeys(t, s)
		for i, e := range all {
			if want := store.AuditKey(e.GetTime().AsTime(), e.GetSequence()); keys[i] != want {
				t.Errorf("key %d = %q, want %q", i, keys[i], want)
			}
		}

		for _, size := range []int{1, 3, 4} {
			if got := listAll(t, l, audit.Query{}, size); !cmp.Equal(got, all, protocmp.Transform()) {
				t.Errorf("pages of %d differ from one page:\n%s", size, cmp.Diff(all, got, protocmp.Transform()))
			}
		}
		var r2 []*outpostv1.AuditEntry
		for _, e := range all {
			if e.GetRolloutId() == "r-2" {
				r2 = append(r2, e)
			}
		}
		if got := listAll(t, l, audit.Query{RolloutID: "r-2"}, 2); !cmp.Equal(got, r2, protocmp.Transform()) {
			t.Errorf("rollout filter:\n%s", cmp.Diff(r2, got, protocmp.Transform()))
		}
		since := all[6].GetTime().AsTime()
		if got := listAll(t, l, audit.Query{Since: since}, 3); !cmp.Equal(got, all[6:], protocmp.Transform()) {
			t.Errorf("since filter:\n%s", cmp.Diff(all[6:], got, protocmp.Transform()))
		}
		if _, _, err := l.List(ctx, audit.Query{}, 10, "garbage"); !errors.Is(err, audit.ErrBadPageToken) {
			t.Errorf("List(bad token) = %v, want ErrBadPageToken", err)
		}
	})

	t.Run("BatchesWrites", func(t *testing.T) {
		clearAudit(t, s)
		l := openLog(t, s, audit.Config{BatchDelay: time.Hour})
		ctx := ctxT(t)
		before, err := s.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 100 {
			l.RecordNodeResult(ctx, "r-1", fmt.Sprintf("n%03d", i), outpostv1.NodeState_NODE_STATE_SUCCEEDED, outpostv1.Step_STEP_UNLOCK, "", "gw1")
		}
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		after, err := s.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Each etcd transaction adds one revision: 100 entries in batches
		// of 64, each entry's marker in its transaction.
		if txns := after - before; txns != 2 {
			t.Errorf("100 entries took %d transactions, want 2", txns)
		}
		all := listAll(t, l, audit.Query{}, 1000)
		checkOrder(t, all, 1)
		markers := readMarkers(t, s, "r-1")
		if len(markers) != 100 {
			t.Errorf("%d markers for 100 node results, want 100", len(markers))
		}
		for _, e := range all {
			key := audit.NodeResultMarkerKey("r-1", e.GetNodeId(), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
			if got, want := markers[key], e.GetSequence(); got != want {
				t.Errorf("marker %s = %d, want the entry's sequence %d", key, got, want)
			}
		}
	})

	t.Run("ReplicasShareOneSequence", func(t *testing.T) {
		clearAudit(t, s)
		// The second replica's clock is an hour behind: its entries still
		// never go back in time.
		a := openLog(t, s, audit.Config{BatchDelay: time.Millisecond, ReplicaName: "a"})
		b := openLog(t, s, audit.Config{BatchDelay: time.Millisecond, ReplicaName: "b",
			Now: func() time.Time { return time.Now().Add(-time.Hour) }})
		ctx := ctxT(t)
		var wg sync.WaitGroup
		for _, l := range []*audit.Log{a, b} {
			for g := range 3 {
				wg.Go(func() {
					for i := range 20 {
						e := entry(fmt.Sprintf("g%d-%d", g, i), "")
						if i%2 == 0 {
							if err := l.Append(ctx, e); err != nil {
								t.Errorf("Append: %v", err)
							}
						} else if err := l.Enqueue(ctx, e); err != nil {
							t.Errorf("Enqueue: %v", err)
						}
					}
				})
			}
		}
		wg.Wait()
		for _, l := range []*audit.Log{a, b} {
			if err := l.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
		all := listAll(t, a, audit.Query{}, 1000)
		if len(all) != 120 {
			t.Fatalf("%d entries, want 120", len(all))
		}
		checkOrder(t, all, 1)
	})

	t.Run("RestartContinuesSequence", func(t *testing.T) {
		clearAudit(t, s)
		l := openLog(t, s, audit.Config{})
		ctx := ctxT(t)
		for range 3 {
			if err := l.Append(ctx, entry("before", "")); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := l.Append(ctx, entry("closed", "")); !errors.Is(err, audit.ErrClosed) {
			t.Errorf("Append after Close = %v, want ErrClosed", err)
		}
		l2 := openLog(t, s, audit.Config{})
		e := entry("after", "")
		if err := l2.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
		if e.GetSequence() != 4 {
			t.Errorf("first sequence after restart = %d, want 4", e.GetSequence())
		}
	})

	t.Run("CloseWritesQueued", func(t *testing.T) {
		clearAudit(t, s)
		l := openLog(t, s, audit.Config{BatchDelay: time.Hour})
		ctx := ctxT(t)
		for i := range 5 {
			if err := l.Enqueue(ctx, entry(fmt.Sprintf("q%d", i), "")); err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
		}
		if err := l.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(rawKeys(t, s)); n != 5 {
			t.Errorf("%d entries after Close, want the 5 queued", n)
		}
		if err := l.Enqueue(ctx, entry("late", "")); !errors.Is(err, audit.ErrClosed) {
			t.Errorf("Enqueue after Close = %v, want ErrClosed", err)
		}
	})

	t.Run("Watch", func(t *testing.T) {
		clearAudit(t, s)
		clk := newClock(t0)
		l := openLog(t, s, audit.Config{Now: clk.Now, BatchDelay: time.Millisecond})
		ctx := ctxT(t)
		for i := range 4 {
			if err := l.Append(ctx, entry(fmt.Sprintf("old%d", i), fmt.Sprintf("r-%d", i%2))); err != nil {
				t.Fatal(err)
			}
			clk.Add(time.Second)
		}
		stored := listAll(t, l, audit.Query{}, 100)

		tests := []struct {
			name string
			q    audit.Query
			// want: actions, the stored ones first, then new ones
			want []string
		}{
			{"Since", audit.Query{Since: stored[2].GetTime().AsTime()}, []string{"old2", "old3", "new0", "new1", "new2"}},
			{"Rollout", audit.Query{RolloutID: "r-1", Since: t0}, []string{"old1", "old3", "new1"}},
			{"Resume", audit.Query{Since: stored[1].GetTime().AsTime(), AfterSequence: stored[1].GetSequence()}, []string{"old2", "old3", "new0", "new1", "new2"}},
			{"ResumeWithoutSince", audit.Query{AfterSequence: stored[2].GetSequence()}, []string{"old3", "new0", "new1", "new2"}},
		}
		type watch struct {
			got  chan *outpostv1.AuditEntry
			done chan error
		}
		wctx, cancel := context.WithCancel(ctx)
		watches := make([]watch, len(tests))
		for i, tt := range tests {
			w := watch{got: make(chan *outpostv1.AuditEntry, 100), done: make(chan error, 1)}
			watches[i] = w
			go func() {
				w.done <- l.Watch(wctx, tt.q, func(e *outpostv1.AuditEntry) error {
					w.got <- e
					return nil
				})
			}()
		}
		// Replaying watches see every entry from their start key, whenever
		// they start; check the stored ones first.
		for i, tt := range tests {
			for _, want := range tt.want {
				if want[:3] != "old" {
					break
				}
				select {
				case e := <-watches[i].got:
					if e.GetAction() != want {
						t.Fatalf("%s: got %q, want %q", tt.name, e.GetAction(), want)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("%s: no stored entry %q after 10s", tt.name, want)
				}
			}
		}
		seen := map[int][]string{}
		for i, tt := range tests {
			for _, want := range tt.want {
				if want[:3] == "old" {
					seen[i] = append(seen[i], want)
				}
			}
		}
		for n := range 3 {
			if err := l.Append(ctx, entry(fmt.Sprintf("new%d", n), fmt.Sprintf("r-%d", n%2))); err != nil {
				t.Fatal(err)
			}
		}
		for i, tt := range tests {
			for len(seen[i]) < len(tt.want) {
				select {
				case e := <-watches[i].got:
					seen[i] = append(seen[i], e.GetAction())
				case <-time.After(10 * time.Second):
					t.Fatalf("%s: got %q after 10s, want %q", tt.name, seen[i], tt.want)
				}
			}
			if diff := cmp.Diff(tt.want, seen[i]); diff != "" {
				t.Errorf("%s: entries (-want +got):\n%s", tt.name, diff)
			}
		}
		cancel()
		for i, tt := range tests {
			if err := <-watches[i].done; !errors.Is(err, context.Canceled) {
				t.Errorf("%s: Watch = %v after cancel, want context.Canceled", tt.name, err)
			}
			select {
			case e := <-watches[i].got:
				t.Errorf("%s: extra entry %q", tt.name, e.GetAction())
			default:
			}
		}

		t.Run("LiveOnly", func(t *testing.T) {
			got := make(chan *outpostv1.AuditEntry, 1000)
			done := make(chan error, 1)
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			go func() {
				done <- l.Watch(wctx, audit.Query{}, func(e *outpostv1.AuditEntry) error {
					got <- e
					return nil
				})
			}()
			// The watch starts after the newest entry when its goroutine
			// runs; append probes until it sees one, then the real entries.
			var delivered []*outpostv1.AuditEntry
			for i := 0; len(delivered) == 0; i++ {
				if i == 200 {
					t.Fatal("live watch saw no entry in 10s")
				}
				if err := l.Append(ctx, entry("probe", "")); err != nil {
					t.Fatal(err)
				}
				select {
				case e := <-got:
					delivered = append(delivered, e)
				case <-time.After(50 * time.Millisecond):
				}
			}
			for n := range 3 {
				if err := l.Append(ctx, entry(fmt.Sprintf("live%d", n), "")); err != nil {
					t.Fatal(err)
				}
			}
			for delivered[len(delivered)-1].GetAction() != "live2" {
				select {
				case e := <-got:
					delivered = append(delivered, e)
				case <-time.After(10 * time.Second):
					t.Fatalf("live watch: no live2 after 10s")
				}
			}
			var live []string
			for _, e := range delivered {
				if e.GetAction() != "probe" {
					live = append(live, e.GetAction())
				}
			}
			if diff := cmp.Diff([]string{"live0", "live1", "live2"}, live); diff != "" {
				t.Errorf("live entries (-want +got):\n%s", diff)
			}
			checkOrder(t, delivered, delivered[0].GetSequence())
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Watch = %v after cancel", err)
			}
		})

		// fn's error ends the watch with that error.
		boom := errors.New("boom")
		if err := l.Watch(ctx, audit.Query{Since: t0}, func(*outpostv1.AuditEntry) error { return boom }); !errors.Is(err, boom) {
			t.Errorf("Watch with failing fn = %v, want boom", err)
		}
	})
}

func TestSweep(t *testing.T) {
	s := storetest.Open(t)
	ctx := ctxT(t)

	t.Run("DeletesExpiredKeepsNewest", func(t *testing.T) {
		clearAudit(t, s)
		clk := newClock(t0)
		l := openLog(t, s, audit.Config{Now: clk.Now, Retention: 48 * time.Hour, SweepInterval: time.Hour})
		for day := range 4 {
			for i := range 3 {
				if err := l.Append(ctx, entry(fmt.Sprintf("d%d-%d", day, i), "")); err != nil {
					t.Fatal(err)
				}
			}
			clk.Add(24 * time.Hour)
		}
		// Now t0+4d: days 0 and 1 are older than 48h.
		n, err := l.Sweep(ctx)
		if err != nil || n != 6 {
			t.Fatalf("Sweep = %d, %v; want 6 deleted", n, err)
		}
		all := listAll(t, l, audit.Query{}, 100)
		if len(all) != 6 || all[0].GetAction() != "d2-0" {
			t.Fatalf("after sweep: %d entries from %q, want 6 from d2-0", len(all), all[0].GetAction())
		}
		// Long after everything expired the newest entry stays, so the
		// sequence goes on.
		clk.Add(365 * 24 * time.Hour)
		if n, err := l.Sweep(ctx); err != nil || n != 5 {
			t.Fatalf("Sweep = %d, %v; want 5 deleted", n, err)
		}
		e := entry("next", "")
		if err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
		if e.GetSequence() != 13 {
			t.Errorf("sequence after sweeping = %d, want 13", e.GetSequence())
		}
	})

	t.Run("ManyInChunks", func(t *testing.T) {
		clearAudit(t, s)
		clk := newClock(t0)
		l := openLog(t, s, audit.Config{Now: clk.Now, Retention: time.Hour, SweepInterval: time.Hour, BatchDelay: time.Millisecond})
		for i := range 2500 {
			if err := l.Enqueue(ctx, entry(fmt.Sprintf("e%d", i), "")); err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
		}
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		clk.Add(2 * time.Hour)
		if n, err := l.Sweep(ctx); err != nil || n != 2499 {
			t.Fatalf("Sweep = %d, %v; want 2499 deleted", n, err)
		}
	})

	t.Run("JanitorRuns", func(t *testing.T) {
		clearAudit(t, s)
		clk := newClock(t0)
		l := openLog(t, s, audit.Config{Now: clk.Now, Retention: time.Hour, SweepInterval: 10 * time.Millisecond})
		for range 3 {
			if err := l.Append(ctx, entry("old", "")); err != nil {
				t.Fatal(err)
			}
		}
		clk.Add(2 * time.Hour)
		for i := 0; len(rawKeys(t, s)) != 1; i++ {
			if i == 500 {
				t.Fatalf("janitor left %d entries after 5s, want 1", len(rawKeys(t, s)))
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func TestConfig(t *testing.T) {
	if _, err := audit.New(audit.Config{}); err == nil {
		t.Error("New without Store succeeded")
	}
	s := storetest.Open(t)
	for _, cfg := range []audit.Config{
		{Store: s, Retention: -1},
		{Store: s, QueueSize: -1},
		{Store: s, BatchDelay: -time.Second},
	} {
		if l, err := audit.New(cfg); err == nil {
			l.Close(context.Background())
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}
