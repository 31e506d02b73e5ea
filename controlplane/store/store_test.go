package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func node(id string) *outpostv1.Node {
	return &outpostv1.Node{Id: id, Address: "10.0.0.1:22", Datacenter: "seoul-1", Labels: map[string]string{"app": "billing-api"}}
}

// keyFence is a fence that holds while key has value want.
func keyFence(key, want string) store.Fence {
	return store.Cmps{clientv3.Compare(clientv3.Value(key), "=", want)}
}

func rawGet(t *testing.T, s *store.Store, key string) (string, bool) {
	t.Helper()
	resp, err := s.Client().Get(ctxT(t), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", false
	}
	return string(resp.Kvs[0].Value), true
}

func TestOpenValidation(t *testing.T) {
	_, err := store.Open(ctxT(t), store.Config{})
	if err == nil || !strings.Contains(err.Error(), "DataDir") {
		t.Errorf("Open(no DataDir, no Endpoints) = %v, want an error naming DataDir", err)
	}
	_, err = store.Open(ctxT(t), store.Config{DataDir: t.TempDir(), DialTimeout: -1})
	if err == nil {
		t.Errorf("Open(negative DialTimeout) succeeded")
	}
}

// TestStore runs the key-value API against one embedded etcd.
func TestStore(t *testing.T) {
	s := storetest.Open(t)
	ctx := ctxT(t)

	t.Run("GetPutDelete", func(t *testing.T) {
		key := store.NodeKey("srv-1")
		var got outpostv1.Node
		found, _, err := s.Get(ctx, key, &got)
		if err != nil || found {
			t.Fatalf("Get(missing) = %v, %v; want not found", found, err)
		}
		want := node("srv-1")
		if err := s.Put(ctx, key, want); err != nil {
			t.Fatalf("Put: %v", err)
		}
		found, rev1, err := s.Get(ctx, key, &got)
		if err != nil || !found || rev1 == 0 {
			t.Fatalf("Get = %v, %d, %v; want found with a revision", found, rev1, err)
		}
		if diff := cmp.Diff(want, &got, protocmp.Transform()); diff != "" {
			t.Errorf("Get mismatch (-want +got):\n%s", diff)
		}
		if err := s.Put(ctx, key, node("srv-1")); err != nil {
			t.Fatalf("Put again: %v", err)
		}
		_, rev2, _ := s.Get(ctx, key, &got)
		if rev2 <= rev1 {
			t.Errorf("ModRevision after second put = %d, want > %d", rev2, rev1)
		}
		deleted, err := s.Delete(ctx, key)
		if err != nil || !deleted {
			t.Errorf("Delete = %v, %v; want true", deleted, err)
		}
		deleted, err = s.Delete(ctx, key)
		if err != nil || deleted {
			t.Errorf("Delete(again) = %v, %v; want false", deleted, err)
		}
	})

	t.Run("GetCorrupt", func(t *testing.T) {
		key := store.NodeKey("corrupt")
		if _, err := s.Client().Put(ctx, key, "\xff\xff\xff"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Get(ctx, key, &outpostv1.Node{}); err == nil {
			t.Errorf("Get(corrupt value) succeeded")
		}
	})

	t.Run("List", func(t *testing.T) {
		prefix := store.PlansPrefix
		var want []string
		for i := range 7 {
			key := store.PlanKey(fmt.Sprintf("p%02d", i))
			want = append(want, key)
			if err := s.Put(ctx, key, node("x")); err != nil {
				t.Fatal(err)
			}
		}
		// A neighbour collection must not leak into the listing.
		if err := s.Put(ctx, "/outpost/plansx", node("x")); err != nil {
			t.Fatal(err)
		}
		var got []string
		after := ""
		pages := 0
		for pages = 1; pages < 10; pages++ {
			next, err := s.List(ctx, prefix, 3, after, func(key string, value []byte) error {
				got = append(got, key)
				return proto.Unmarshal(value, &outpostv1.Node{})
			})
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if next == "" {
				break
			}
			after = next
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("List keys (-want +got):\n%s", diff)
		}
		if pages != 3 {
			t.Errorf("List took %d pages of 3 for 7 keys, want 3", pages)
		}

		wantErr := errors.New("boom")
		_, err := s.List(ctx, prefix, 0, "", func(string, []byte) error { return wantErr })
		if !errors.Is(err, wantErr) {
			t.Errorf("List with failing decode = %v, want %v", err, wantErr)
		}
	})

	t.Run("ListChildren", func(t *testing.T) {
		var want []string
		for i := range 5 {
			id := fmt.Sprintf("r%d", i)
			want = append(want, store.RolloutKey(id))
			if err := s.Put(ctx, store.RolloutKey(id), node(id)); err != nil {
				t.Fatal(err)
			}
			// Rollouts 1 and 3 have no per-node keys; the others have many.
			if i%2 == 1 {
				continue
			}
			var ops []clientv3.Op
			for n := range 40 {
				op, err := store.OpPut(store.RolloutNodeKey(id, fmt.Sprintf("srv-%03d", n)), node("n"))
				if err != nil {
					t.Fatal(err)
				}
				ops = append(ops, op)
			}
			if err := s.Txn(ctx, nil, ops...); err != nil {
				t.Fatal(err)
			}
		}
		// "r1.x" sorts between "r1" and "r1/..." and is a child too.
		if err := s.Put(ctx, store.RolloutKey("r1.x"), node("x")); err != nil {
			t.Fatal(err)
		}
		want = append(want[:2], append([]string{store.RolloutKey("r1.x")}, want[2:]...)...)

		for _, limit := range []int64{1, 2, 4, 6, 100} {
			var got []string
			after := ""
			for page := 0; ; page++ {
				if page > 10 {
					t.Fatalf("limit %d: too many pages", limit)
				}
				next, err := s.ListChildren(ctx, store.RolloutsPrefix, limit, after, func(key string, _ []byte) error {
					got = append(got, key)
					return nil
				})
				if err != nil {
					t.Fatalf("ListChildren: %v", err)
				}
				if next == "" {
					// An exact last page must not promise more.
					if wantPages := (len(want) + int(limit) - 1) / int(limit); page+1 != wantPages {
						t.Errorf("limit %d: %d pages, want %d", limit, page+1, wantPages)
					}
					break
				}
				after = next
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("limit %d: ListChildren keys (-want +got):\n%s", limit, diff)
			}
		}

		var nodes int
		if _, err := s.List(ctx, store.RolloutNodesPrefix("r2"), 1000, "", func(string, []byte) error { nodes++; return nil }); err != nil {
			t.Fatal(err)
		}
		if nodes != 40 {
			t.Errorf("List(rollout r2 nodes) = %d keys, want 40", nodes)
		}
	})

	t.Run("TxnFence", func(t *testing.T) {
		guard := "/outpost/test/guard"
		if _, err := s.Client().Put(ctx, guard, "epoch-1"); err != nil {
			t.Fatal(err)
		}
		key := store.RolloutKey("fenced")
		op, _ := store.OpPut(key, node("v1"))
		if err := s.Txn(ctx, keyFence(guard, "epoch-1"), op); err != nil {
			t.Fatalf("Txn with holding fence: %v", err)
		}
		before, _ := rawGet(t, s, key)

		failuresBefore := s.Stats().FenceFailures
		op2, _ := store.OpPut(key, node("v2"))
		err := s.Txn(ctx, keyFence(guard, "epoch-2"), op2, clientv3.OpDelete(store.RolloutKey("other")))
		if !errors.Is(err, store.ErrNotLeader) {
			t.Fatalf("Txn with failing fence = %v, want ErrNotLeader", err)
		}
		if after, _ := rawGet(t, s, key); after != before {
			t.Errorf("fenced-out Txn changed %s", key)
		}
		if got := s.Stats().FenceFailures - failuresBefore; got != 1 {
			t.Errorf("FenceFailures grew by %d, want 1", got)
		}
		if err := s.Txn(ctx, keyFence(guard, "epoch-1")); err != nil {
			t.Errorf("Txn with no ops and a holding fence = %v", err)
		}
	})

	t.Run("TxnChunks", func(t *testing.T) {
		before := s.Stats()
		var ops []clientv3.Op
		for i := range 300 {
			op, _ := store.OpPut(store.RolloutNodeKey("big", fmt.Sprintf("n%03d", i)), node("n"))
			ops = append(ops, op)
		}
		if err := s.Txn(ctx, nil, ops...); err != nil {
			t.Fatalf("Txn(300 ops): %v", err)
		}
		after := s.Stats()
		if got := after.WriteTxns - before.WriteTxns; got != 3 {
			t.Errorf("Txn(300 ops) sent %d txns, want 3", got)
		}
		if got := after.WriteOps - before.WriteOps; got != 300 {
			t.Errorf("Txn(300 ops) counted %d ops, want 300", got)
		}
		resp, err := s.Client().Get(ctx, store.RolloutNodesPrefix("big"), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil || resp.Count != 300 {
			t.Errorf("keys written = %v (%v), want 300", resp.Count, err)
		}
	})

	t.Run("TxnIf", func(t *testing.T) {
		guard := "/outpost/test/guard2"
		if _, err := s.Client().Put(ctx, guard, "me"); err != nil {
			t.Fatal(err)
		}
		key := store.RolloutKey("cas")
		if err := s.Put(ctx, key, node("v1")); err != nil {
			t.Fatal(err)
		}
		_, rev, _ := s.Get(ctx, key, &outpostv1.Node{})
		unchanged := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", rev)}
		op, _ := store.OpPut(key, node("v2"))

		if err := s.TxnIf(ctx, keyFence(guard, "someone-else"), unchanged, op); !errors.Is(err, store.ErrNotLeader) {
			t.Errorf("TxnIf(fence fails) = %v, want ErrNotLeader", err)
		}
		if err := s.TxnIf(ctx, keyFence(guard, "me"), unchanged, op); err != nil {
			t.Errorf("TxnIf(all hold) = %v", err)
		}
		op3, _ := store.OpPut(key, node("v3"))
		if err := s.TxnIf(ctx, keyFence(guard, "me"), unchanged, op3); !errors.Is(err, store.ErrConflict) {
			t.Errorf("TxnIf(stale revision) = %v, want ErrConflict", err)
		}
		var got outpostv1.Node
		s.Get(ctx, key, &got)
		if got.Id != "v2" {
			t.Errorf("after TxnIf calls, value id = %q, want v2", got.Id)
		}
		if err := s.TxnIf(ctx, nil, unchanged, make([]clientv3.Op, store.MaxTxnOps+1)...); err == nil {
			t.Errorf("TxnIf(too many ops) succeeded")
		}
	})

	t.Run("Watch", func(t *testing.T) {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		rev, err := s.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// An earlier write must not show up: the watch starts after rev.
		if err := s.Put(ctx, store.GatewayKey("before"), node("g")); err != nil {
			t.Fatal(err)
		}
		wch := s.Watch(wctx, store.GatewaysPrefix, rev+2)
		if err := s.Put(ctx, store.GatewayKey("seoul-1"), node("g")); err != nil {
			t.Fatal(err)
		}
		select {
		case wr := <-wch:
			if err := wr.Err(); err != nil || len(wr.Events) != 1 || string(wr.Events[0].Kv.Key) != store.GatewayKey("seoul-1") {
				t.Errorf("watch response = %+v (err %v), want one put of the gateway key", wr.Events, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no watch event within 10s")
		}
	})
}

func TestReopenAndShare(t *testing.T) {
	dir := t.TempDir()
	ctx := ctxT(t)
	cfg := store.Config{DataDir: dir, Logger: storetest.Logger()}
	s, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, store.NodeKey("kept"), node("kept")); err != nil {
		t.Fatal(err)
	}

	// The data dir is locked while open.
	if s2, err := store.Open(ctx, cfg); err == nil {
		s2.Close()
		t.Errorf("second Open of the same data dir succeeded")
	}

	// A second store (a second replica) can share the embedded etcd.
	ext, err := store.Open(ctx, store.Config{Endpoints: s.Endpoints(), Insecure: true, Logger: storetest.Logger()})
	if err != nil {
		t.Fatalf("Open(Endpoints of embedded): %v", err)
	}
	var got outpostv1.Node
	if found, _, err := ext.Get(ctx, store.NodeKey("kept"), &got); err != nil || !found {
		t.Errorf("Get via second store = %v, %v; want found", found, err)
	}
	if err := ext.Close(); err != nil {
		t.Errorf("Close external: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	s, err = store.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if found, _, err := s.Get(ctx, store.NodeKey("kept"), &got); err != nil || !found {
		t.Errorf("Get after reopen = %v, %v; want found", found, err)
	}
}

func TestOpenUnreachable(t *testing.T) {
	_, err := store.Open(ctxT(t), store.Config{
		Endpoints:   []string{"http://127.0.0.1:1"},
		Insecure:    true,
		DialTimeout: 300 * time.Millisecond,
		Logger:      storetest.Logger(),
	})
	if err == nil {
		t.Errorf("Open(unreachable endpoint) succeeded")
	}
}
