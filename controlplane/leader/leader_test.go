package leader_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/outposthq/outpost/controlplane/leader"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Enough to notice a revoked lease (keepalives run every TTL/3) with room
// for a loaded machine; every wait below is bounded by it.
const waitLimit = 15 * time.Second

// ttl is short so a lease revoked behind a session's back is noticed fast.
const ttl = 2 * time.Second

var _ store.Fence = (*leader.Leadership)(nil)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func config(s *store.Store, name string) leader.Config {
	return leader.Config{Client: s.Client(), Prefix: store.LeaderPrefix, Name: name, TTL: ttl, Logger: storetest.Logger()}
}

type result struct {
	l   *leader.Leadership
	err error
}

// campaign runs Campaign in the background.
func campaign(ctx context.Context, cfg leader.Config) <-chan result {
	c := make(chan result, 1)
	go func() {
		l, err := leader.Campaign(ctx, cfg)
		c <- result{l, err}
	}()
	return c
}

func await(t *testing.T, c <-chan result) *leader.Leadership {
	t.Helper()
	select {
	case r := <-c:
		if r.err != nil {
			t.Fatalf("Campaign: %v", r.err)
		}
		return r.l
	case <-time.After(waitLimit):
		t.Fatalf("Campaign did not return within %v", waitLimit)
		return nil
	}
}

// notYet waits until the campaign of c queued behind the leader (its
// candidate key is the second) and checks that it has not returned: a
// candidate returns only once the keys before it are gone.
func notYet(t *testing.T, s *store.Store, c <-chan result, what string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for len(candidateLeases(t, s)) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no second candidate key within %v", what, waitLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case r := <-c:
		t.Fatalf("%s: Campaign returned (%v, %v) while another replica leads", what, r.l, r.err)
	default:
	}
}

func awaitDone(t *testing.T, l *leader.Leadership) {
	t.Helper()
	select {
	case <-l.Done():
	case <-time.After(waitLimit):
		t.Fatalf("Done not closed within %v", waitLimit)
	}
}

// candidates returns the election keys in campaign order with their leases.
func candidates(t *testing.T, s *store.Store) []*clientv3.GetResponse {
	t.Helper()
	resp, err := s.Client().Get(context.Background(), store.LeaderPrefix+"/",
		clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		t.Fatal(err)
	}
	return []*clientv3.GetResponse{resp}
}

func candidateLeases(t *testing.T, s *store.Store) []clientv3.LeaseID {
	var ids []clientv3.LeaseID
	for _, kv := range candidates(t, s)[0].Kvs {
		ids = append(ids, clientv3.LeaseID(kv.Lease))
	}
	return ids
}

func revoke(t *testing.T, s *store.Store, id clientv3.LeaseID) {
	t.Helper()
	if _, err := s.Client().Revoke(context.Background(), id); err != nil {
		t.Fatalf("revoke lease %x: %v", id, err)
	}
}

func checkObserve(t *testing.T, s *store.Store, wantName string, wantEpoch int64) {
	t.Helper()
	name, epoch, err := leader.Observe(context.Background(), s.Client(), store.LeaderPrefix)
	if err != nil || name != wantName || epoch != wantEpoch {
		t.Errorf("Observe = %q, %d, %v; want %q, %d", name, epoch, err, wantName, wantEpoch)
	}
}

// fencedWrite writes value id to key under l's fence and checks the outcome.
func fencedWrite(t *testing.T, s *store.Store, l *leader.Leadership, key, id string, wantErr error) {
	t.Helper()
	ctx := context.Background()
	before, _ := s.Client().Get(ctx, key)
	op, err := store.OpPut(key, &outpostv1.Node{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Txn(ctx, l, op)
	if !errors.Is(err, wantErr) {
		t.Fatalf("fenced Txn by %s = %v, want %v", l.Name(), err, wantErr)
	}
	if wantErr == nil {
		return
	}
	after, _ := s.Client().Get(ctx, key)
	if len(before.Kvs) != len(after.Kvs) || (len(after.Kvs) == 1 && after.Kvs[0].ModRevision != before.Kvs[0].ModRevision) {
		t.Errorf("refused fenced Txn by %s changed %s", l.Name(), key)
	}
}

func TestElection(t *testing.T) {
	s := storetest.Open(t)
	ctx := ctxT(t)
	key := store.RolloutKey("r1")

	if _, _, err := leader.Observe(ctx, s.Client(), store.LeaderPrefix); !errors.Is(err, leader.ErrNoLeader) {
		t.Errorf("Observe before any campaign = %v, want ErrNoLeader", err)
	}

	a := await(t, campaign(ctx, config(s, "a")))
	checkObserve(t, s, "a", a.Epoch())
	fencedWrite(t, s, a, key, "by-a", nil)

	bc := campaign(ctx, config(s, "b"))
	notYet(t, s, bc, "b while a leads")

	// a resigns: b takes over with a larger epoch; a is fenced out.
	if err := a.Resign(ctx); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	awaitDone(t, a)
	b := await(t, bc)
	if b.Epoch() <= a.Epoch() {
		t.Errorf("epoch after resign = %d, want > %d", b.Epoch(), a.Epoch())
	}
	checkObserve(t, s, "b", b.Epoch())
	fencedWrite(t, s, a, key, "by-deposed-a", store.ErrNotLeader)
	fencedWrite(t, s, b, key, "by-b", nil)

	// b dies (its lease is revoked behind its back): Done closes, c takes
	// over with a larger epoch, and b is fenced out.
	cc := campaign(ctx, config(s, "c"))
	notYet(t, s, cc, "c while b leads")
	revoke(t, s, candidateLeases(t, s)[0])
	awaitDone(t, b)
	c := await(t, cc)
	if c.Epoch() <= b.Epoch() {
		t.Errorf("epoch after lease loss = %d, want > %d", c.Epoch(), b.Epoch())
	}
	checkObserve(t, s, "c", c.Epoch())
	fencedWrite(t, s, b, key, "by-dead-b", store.ErrNotLeader)
	fencedWrite(t, s, c, key, "by-c", nil)

	// Resigning twice, or after the lease is gone, is fine.
	if err := b.Resign(ctx); err != nil {
		t.Errorf("Resign after lease loss = %v", err)
	}
	if err := c.Resign(ctx); err != nil {
		t.Errorf("Resign: %v", err)
	}
	if err := c.Resign(ctx); err != nil {
		t.Errorf("second Resign: %v", err)
	}
	if _, _, err := leader.Observe(ctx, s.Client(), store.LeaderPrefix); !errors.Is(err, leader.ErrNoLeader) {
		t.Errorf("Observe after all resigned = %v, want ErrNoLeader", err)
	}
}

// TestLeaseExpiresWhileWaiting checks that a candidate whose lease dies
// while it waits does not later report leadership with the dead lease.
func TestLeaseExpiresWhileWaiting(t *testing.T) {
	s := storetest.Open(t)
	ctx := ctxT(t)

	a := await(t, campaign(ctx, config(s, "a")))
	bc := campaign(ctx, config(s, "b"))
	var leases []clientv3.LeaseID
	for range 100 {
		if leases = candidateLeases(t, s); len(leases) == 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(leases) != 2 {
		t.Fatalf("b's candidate key did not appear; leases %v", leases)
	}
	dead := leases[1]
	revoke(t, s, dead)
	// b's session notices and b campaigns again on a new lease, before the
	// way is cleared; a naive Campaign never queues again (and would return
	// success with the deleted key once a resigns).
	deadline := time.Now().Add(waitLimit)
	for {
		leases = candidateLeases(t, s)
		if len(leases) == 2 && leases[1] != dead {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b did not campaign again on a new lease within %v; leases %v (dead %x)", waitLimit, leases, dead)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := a.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	b := await(t, bc)
	defer b.Resign(ctx)

	kvs := candidates(t, s)[0].Kvs
	if len(kvs) != 1 || string(kvs[0].Key) != b.Key() || clientv3.LeaseID(kvs[0].Lease) == dead {
		t.Fatalf("after b won: candidates %v, b's key %s, dead lease %x; want only b's key on a live lease", kvs, b.Key(), dead)
	}
	checkObserve(t, s, "b", b.Epoch())
	select {
	case <-b.Done():
		t.Fatal("b's Done is closed right after winning")
	default:
	}
	fencedWrite(t, s, b, store.RolloutKey("r"), "by-b", nil)
}

func TestContext(t *testing.T) {
	s := storetest.Open(t)
	ctx := ctxT(t)

	// Cancelling ctx ends the leadership and frees the key.
	actx, cancelA := context.WithCancel(ctx)
	a := await(t, campaign(actx, config(s, "a")))
	// A waiting candidate whose ctx ends returns the ctx error and leaves
	// no key behind.
	bctx, cancelB := context.WithCancel(ctx)
	bc := campaign(bctx, config(s, "b"))
	notYet(t, s, bc, "b while a leads")
	cancelB()
	select {
	case r := <-bc:
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("Campaign after cancel = %v, %v; want context.Canceled", r.l, r.err)
		}
	case <-time.After(waitLimit):
		t.Fatal("cancelled Campaign did not return")
	}
	if n := len(candidateLeases(t, s)); n != 1 {
		t.Errorf("%d candidate keys after b gave up, want 1 (a's)", n)
	}

	cancelA()
	awaitDone(t, a)
	c := await(t, campaign(ctx, config(s, "c")))
	if c.Epoch() <= a.Epoch() {
		t.Errorf("epoch = %d, want > %d", c.Epoch(), a.Epoch())
	}
	a.Resign(ctx) // waits for a's goroutine
	c.Resign(ctx)
}

func TestConfig(t *testing.T) {
	s := storetest.Open(t)
	tests := []struct {
		name string
		cfg  leader.Config
	}{
		{"no client", leader.Config{Prefix: "/p", Name: "a"}},
		{"no prefix", leader.Config{Client: s.Client(), Name: "a"}},
		{"no name", leader.Config{Client: s.Client(), Prefix: "/p"}},
		{"negative ttl", leader.Config{Client: s.Client(), Prefix: "/p", Name: "a", TTL: -time.Second}},
	}
	for _, tt := range tests {
		if _, err := leader.Campaign(context.Background(), tt.cfg); err == nil {
			t.Errorf("%s: Campaign succeeded", tt.name)
		}
	}
	cfg := leader.Config{Client: s.Client(), Prefix: "/p", Name: "a"}
	if err := cfg.CheckAndSetDefaults(); err != nil || cfg.TTL != leader.DefaultTTL || cfg.Logger == nil {
		t.Errorf("defaults: err %v, TTL %v, logger %v; want TTL %v", err, cfg.TTL, cfg.Logger, leader.DefaultTTL)
	}
}
