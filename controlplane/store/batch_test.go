package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func nodeState(id string, attempt int) *outpostv1.Node {
	return &outpostv1.Node{Id: id, Address: fmt.Sprintf("attempt-%d", attempt)}
}

// waitKeys polls until n keys exist under prefix, for at most 10 s.
func waitKeys(t *testing.T, s *store.Store, prefix string, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := s.Client().Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d keys after 10s, want %d", prefix, resp.Count, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func getNode(t *testing.T, s *store.Store, key string) *outpostv1.Node {
	t.Helper()
	var n outpostv1.Node
	found, _, err := s.Get(context.Background(), key, &n)
	if err != nil || !found {
		t.Fatalf("Get(%s) = %v, %v; want found", key, found, err)
	}
	return &n
}

func TestBatchWriter(t *testing.T) {
	s := storetest.Open(t)
	ctx := ctxT(t)
	guard := "/outpost/test/leader"
	if _, err := s.Client().Put(ctx, guard, "me"); err != nil {
		t.Fatal(err)
	}
	holds := keyFence(guard, "me")

	t.Run("CoalescesLastWriteWins", func(t *testing.T) {
		w := store.NewBatchWriter(s, holds, 0, time.Hour)
		defer w.Close(ctx)
		before := s.Stats()
		for attempt := range 100 {
			w.Put(store.RolloutNodeKey("c", "hot"), nodeState("hot", attempt))
		}
		for i := range 10 {
			w.Put(store.RolloutNodeKey("c", fmt.Sprintf("n%d", i)), nodeState("n", i))
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		after := s.Stats()
		if txns, ops := after.WriteTxns-before.WriteTxns, after.WriteOps-before.WriteOps; txns != 1 || ops != 11 {
			t.Errorf("110 puts of 11 keys wrote %d txns / %d ops, want 1 / 11", txns, ops)
		}
		if got := getNode(t, s, store.RolloutNodeKey("c", "hot")).Address; got != "attempt-99" {
			t.Errorf("hot key = %q, want the last put attempt-99", got)
		}
	})

	t.Run("WritesWhenFull", func(t *testing.T) {
		w := store.NewBatchWriter(s, holds, 8, time.Hour)
		defer w.Close(ctx)
		for i := range 8 {
			w.Put(store.RolloutNodeKey("full", fmt.Sprintf("n%d", i)), nodeState("n", i))
		}
		waitKeys(t, s, store.RolloutNodesPrefix("full"), 8)
	})

	t.Run("WritesAfterDelay", func(t *testing.T) {
		w := store.NewBatchWriter(s, holds, 100, 20*time.Millisecond)
		defer w.Close(ctx)
		w.Put(store.RolloutNodeKey("delay", "n"), nodeState("n", 1))
		waitKeys(t, s, store.RolloutNodesPrefix("delay"), 1)
	})

	t.Run("ManyWritersBackpressure", func(t *testing.T) {
		w := store.NewBatchWriter(s, holds, 16, time.Millisecond)
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Go(func() {
				for i := range 250 {
					// Every key is put twice; the second value must win.
					key := store.RolloutNodeKey("many", fmt.Sprintf("g%d-n%03d", g, i))
					w.Put(key, nodeState("n", 1))
					w.Put(key, nodeState("n", 2))
				}
			})
		}
		wg.Wait()
		if err := w.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		waitKeys(t, s, store.RolloutNodesPrefix("many"), 1000)
		_, err := s.List(ctx, store.RolloutNodesPrefix("many"), 1000, "", func(key string, v []byte) error {
			var n outpostv1.Node
			if err := proto.Unmarshal(v, &n); err != nil {
				return err
			}
			if n.Address != "attempt-2" {
				t.Errorf("%s = %q, want attempt-2", key, n.Address)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Err(); err != nil {
			t.Errorf("Err() = %v after clean writes", err)
		}
	})

	t.Run("TransientErrorKeepsPuts", func(t *testing.T) {
		w := store.NewBatchWriter(s, holds, 0, time.Hour)
		defer w.Close(ctx)
		key := store.RolloutNodeKey("transient", "n")
		w.Put(key, nodeState("n", 1))
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if err := w.Flush(cancelled); err == nil {
			t.Fatal("Flush with a cancelled ctx succeeded")
		}
		if w.Err() == nil {
			t.Error("Err() = nil after a failed write")
		}
		if _, found := rawGet(t, s, key); found {
			t.Fatal("key written by a cancelled flush")
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatalf("second Flush: %v", err)
		}
		if got := getNode(t, s, key).Address; got != "attempt-1" {
			t.Errorf("key = %q after retry, want attempt-1", got)
		}
		if err := w.Err(); err != nil {
			t.Errorf("Err() = %v after a successful retry, want nil", err)
		}
	})

	t.Run("NotLeaderIsFinal", func(t *testing.T) {
		w := store.NewBatchWriter(s, keyFence(guard, "someone-else"), 0, time.Hour)
		w.Put(store.RolloutNodeKey("deposed", "n1"), nodeState("n", 1))
		if err := w.Flush(ctx); !errors.Is(err, store.ErrNotLeader) {
			t.Errorf("Flush = %v, want ErrNotLeader", err)
		}
		if err := w.Err(); !errors.Is(err, store.ErrNotLeader) {
			t.Errorf("Err() = %v, want ErrNotLeader", err)
		}
		w.Put(store.RolloutNodeKey("deposed", "n2"), nodeState("n", 2))
		if err := w.Close(ctx); !errors.Is(err, store.ErrNotLeader) {
			t.Errorf("Close = %v, want ErrNotLeader", err)
		}
		waitKeys(t, s, store.RolloutNodesPrefix("deposed"), 0)
	})

	t.Run("CloseFlushes", func(t *testing.T) {
		w := store.NewBatchWriter(s, holds, 0, time.Hour)
		w.Put(store.RolloutNodeKey("close", "n"), nodeState("n", 1))
		if err := w.Close(ctx); err != nil {
			t.Fatalf("Close: %v", err)
		}
		waitKeys(t, s, store.RolloutNodesPrefix("close"), 1)
		w.Put(store.RolloutNodeKey("close", "late"), nodeState("n", 2))
		if err := w.Err(); !errors.Is(err, store.ErrClosed) {
			t.Errorf("Err() after Put on closed writer = %v, want ErrClosed", err)
		}
		if err := w.Close(ctx); err != nil {
			t.Errorf("second Close = %v", err)
		}
	})
}
