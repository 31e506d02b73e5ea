package watchhub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLimit bounds every wait; generous for a loaded machine.
const waitLimit = 20 * time.Second

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

func newHub(t *testing.T, s *store.Store, perCaller, total int) *Hub {
	t.Helper()
	h, err := New(Config{Store: s, MaxPerCaller: perCaller, MaxTotal: total, Logger: storetest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func nodeName(i int) string { return fmt.Sprintf("n-%05d", i) }

// putRollout writes rollout id in state st and n node records.
func putRollout(t *testing.T, s *store.Store, id string, n int, st outpostv1.RolloutState) {
	t.Helper()
	var ops []clientv3.Op
	for i := range n {
		op, err := store.OpPut(store.RolloutNodeKey(id, nodeName(i)), &outpostv1.RolloutNode{RolloutId: id, NodeId: nodeName(i), State: outpostv1.NodeState_NODE_STATE_PENDING})
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, op)
	}
	if err := s.Txn(ctxT(t), nil, ops...); err != nil {
		t.Fatal(err)
	}
	setRollout(t, s, id, st, "")
}

func setRollout(t *testing.T, s *store.Store, id string, st outpostv1.RolloutState, msg string) {
	t.Helper()
	if err := s.Put(ctxT(t), store.RolloutKey(id), &outpostv1.Rollout{Id: id, State: st, Message: msg}); err != nil {
		t.Fatal(err)
	}
}

// setNodes writes the nodes' records with error text (one transaction).
func setNodes(t *testing.T, s *store.Store, id string, text string, nodes ...int) {
	t.Helper()
	var ops []clientv3.Op
	for _, i := range nodes {
		op, err := store.OpPut(store.RolloutNodeKey(id, nodeName(i)), &outpostv1.RolloutNode{RolloutId: id, NodeId: nodeName(i), State: outpostv1.NodeState_NODE_STATE_RUNNING, Error: text})
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, op)
	}
	if err := s.Txn(ctxT(t), nil, ops...); err != nil {
		t.Fatal(err)
	}
}

// taken is what a test watcher received.
type taken struct {
	t     *testing.T
	w     *Watcher
	resps []*outpostv1.WatchRolloutResponse
	nodes map[string]*outpostv1.RolloutNode
	r     *outpostv1.Rollout
	ended bool
}

func newTaken(t *testing.T, w *Watcher) *taken {
	t.Cleanup(w.Leave)
	return &taken{t: t, w: w, nodes: map[string]*outpostv1.RolloutNode{}}
}

// until takes responses until ok accepts what was received, waiting on
// Ready when nothing is pending; it fails the test on errors and after
// waitLimit.
func (k *taken) until(what string, ok func(k *taken) bool) {
	k.t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for !ok(k) {
		if k.ended {
			k.t.Fatalf("watch ended while waiting for %s", what)
		}
		resps, end, err := k.w.Take()
		if err != nil {
			k.t.Fatalf("Take while waiting for %s: %v", what, err)
		}
		k.add(resps)
		k.ended = end
		if len(resps) > 0 || end {
			continue
		}
		select {
		case <-k.w.Ready():
		case <-deadline.C:
			k.t.Fatalf("no %s within %v", what, waitLimit)
		}
	}
}

// wire returns m as a client receives it: Take's responses carry their
// event as encoded bytes.
func wire(t *testing.T, m *outpostv1.WatchRolloutResponse) *outpostv1.WatchRolloutResponse {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := &outpostv1.WatchRolloutResponse{}
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatalf("a response does not decode: %v", err)
	}
	if len(out.ProtoReflect().GetUnknown()) != 0 {
		t.Fatalf("a response has fields a client does not know: %v", out)
	}
	return out
}

func (k *taken) add(resps []*outpostv1.WatchRolloutResponse) {
	k.t.Helper()
	for _, m := range resps {
		m = wire(k.t, m)
		if n := len(k.resps); n > 0 && m.GetRevision() < k.resps[n-1].GetRevision() {
			k.t.Fatalf("revision went back from %d to %d", k.resps[n-1].GetRevision(), m.GetRevision())
		}
		k.resps = append(k.resps, m)
		switch ev := m.GetEvent().(type) {
		case *outpostv1.WatchRolloutResponse_Rollout:
			k.r = ev.Rollout
		case *outpostv1.WatchRolloutResponse_Node:
			k.nodes[ev.Node.GetNodeId()] = ev.Node
		case *outpostv1.WatchRolloutResponse_NodePage:
			if len(ev.NodePage.GetNodes()) == 0 {
				k.t.Fatalf("empty node page at revision %d", m.GetRevision())
			}
			for _, n := range ev.NodePage.GetNodes() {
				k.nodes[n.GetNodeId()] = n
			}
		}
	}
}

func (k *taken) snapshotDone() bool {
	n := len(k.resps)
	return n > 0 && k.resps[n-1].GetSnapshotEnd() != nil
}

// nodeCount counts the node states received (in node and node_page
// responses) from response from on.
func (k *taken) nodeCount(from int) int {
	n := 0
	for _, m := range k.resps[from:] {
		if m.GetNode() != nil {
			n++
		}
		n += len(m.GetNodePage().GetNodes())
	}
	return n
}

func join(t *testing.T, h *Hub, caller, id string, from int64, pageSize int) *taken {
	t.Helper()
	w, err := h.Join(caller, id, from, pageSize)
	if err != nil {
		t.Fatalf("Join(%s, %s): %v", caller, id, err)
	}
	return newTaken(t, w)
}

func TestJoinCaps(t *testing.T) {
	s := storetest.Open(t)
	putRollout(t, s, "r-1", 3, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
	h := newHub(t, s, 2, 3)

	a1, err := h.Join("user/alice", "r-1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := h.Join("user/alice", "r-1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Alice is at her cap; refusals change no count (checked below).
	for range 3 {
		_, err := h.Join("user/alice", "r-1", 0, 0)
		var capErr *CapError
		if !errors.As(err, &capErr) || capErr.Caller != "user/alice" || capErr.Limit != 2 {
			t.Fatalf("third Join of alice = %v, want a per-caller CapError of 2", err)
		}
		if !strings.Contains(err.Error(), "user/alice") {
			t.Errorf("error %q does not name the caller", err)
		}
	}
	b1, err := h.Join("user/bob", "r-1", 0, 0)
	if err != nil {
		t.Fatalf("bob's first Join: %v", err)
	}
	// Three open: the total cap.
	_, err = h.Join("user/carol", "r-1", 0, 0)
	var capErr *CapError
	if !errors.As(err, &capErr) || capErr.Caller != "" || capErr.Limit != 3 {
		t.Fatalf("Join over the total = %v, want a total CapError of 3", err)
	}

	a1.Leave()
	a1.Leave() // twice: counted once
	if _, err := h.Join("user/alice", "r-1", 0, 0); err != nil {
		t.Fatalf("Join after a Leave: %v", err)
	}
	if _, err := h.Join("user/carol", "r-1", 0, 0); err == nil {
		t.Fatal("carol joined over the total after one leave and one join")
	}
	a2.Leave()
	b1.Leave()
	if _, err := h.Join("user/carol", "r-1", 0, 0); err != nil {
		t.Fatalf("carol's Join with room: %v", err)
	}
	h.mu.Lock()
	total, perAlice := h.total, h.perCaller["user/alice"]
	h.mu.Unlock()
	if total != 2 || perAlice != 1 {
		t.Errorf("counts after the dance: total %d, alice %d; want 2 and 1", total, perAlice)
	}
}

func TestSnapshotPages(t *testing.T) {
	s := storetest.Open(t)
	const nodes = 5000
	putRollout(t, s, "r-1", nodes, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
	h := newHub(t, s, 100, 100)
	for _, tc := range []struct {
		pageSize int // as Join gets it (the handler clamps)
		maxNodes int // per response
	}{
		{pageSize: 0, maxNodes: 1},
		{pageSize: PageSize, maxNodes: PageSize},
		{pageSize: 300, maxNodes: 300},
		{pageSize: 1 << 30, maxNodes: PageSize},
	} {
		t.Run(fmt.Sprint(tc.pageSize), func(t *testing.T) {
			k := join(t, h, "user/a", "r-1", 0, tc.pageSize)
			k.until("the snapshot", (*taken).snapshotDone)
			if k.resps[0].GetRollout().GetId() != "r-1" {
				t.Fatalf("first response %v, want the rollout", k.resps[0])
			}
			rev := k.resps[0].GetRevision()
			var ids []string
			carrying := 0
			for _, m := range k.resps[1 : len(k.resps)-1] {
				if m.GetRevision() != rev {
					t.Fatalf("snapshot response at revision %d, want %d", m.GetRevision(), rev)
				}
				page := m.GetNodePage().GetNodes()
				if m.GetNode() != nil {
					page = []*outpostv1.RolloutNode{m.GetNode()}
				}
				if len(page) == 0 || len(page) > tc.maxNodes {
					t.Fatalf("response with %d nodes, want 1 to %d: %v", len(page), tc.maxNodes, m)
				}
				if (m.GetNode() != nil) != (tc.pageSize == 0) {
					t.Fatalf("page size %d: got %T", tc.pageSize, m.GetEvent())
				}
				if size := proto.Size(m); size > maxPageBytes {
					t.Fatalf("a response of %d nodes is %d bytes, over %d", len(page), size, maxPageBytes)
				}
				carrying++
				for _, n := range page {
					ids = append(ids, n.GetNodeId())
				}
			}
			if least := (nodes + tc.maxNodes - 1) / tc.maxNodes; carrying < least || carrying > 2*least {
				t.Errorf("%d node-carrying responses, want %d to %d", carrying, least, 2*least)
			}
			if len(ids) != nodes {
				t.Fatalf("snapshot of %d nodes, want %d", len(ids), nodes)
			}
			for i, id := range ids {
				if id != nodeName(i) {
					t.Fatalf("node %d of the snapshot is %s, want %s (node id order, each once)", i, id, nodeName(i))
				}
			}
		})
	}
}

func TestSnapshotPagesBoundBytes(t *testing.T) {
	s := storetest.Open(t)
	putRollout(t, s, "r-1", 0, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
	big := strings.Repeat("x", 10<<10)
	for i := 0; i < 40; i += 10 {
		setNodes(t, s, "r-1", big, i, i+1, i+2, i+3, i+4, i+5, i+6, i+7, i+8, i+9)
	}
	setNodes(t, s, "r-1", strings.Repeat("y", 100<<10), 40) // one over the bound on its own
	h := newHub(t, s, 10, 10)
	k := join(t, h, "user/a", "r-1", 0, PageSize)
	k.until("the snapshot", (*taken).snapshotDone)
	if len(k.nodes) != 41 {
		t.Fatalf("snapshot of %d nodes, want 41", len(k.nodes))
	}
	pages := 0
	for _, m := range k.resps {
		if page := m.GetNodePage().GetNodes(); len(page) > 0 {
			pages++
			if size := proto.Size(m); size > maxPageBytes && len(page) > 1 {
				t.Errorf("a page of %d nodes is %d bytes, over %d", len(page), size, maxPageBytes)
			}
		}
	}
	if pages != 14+1 {
		t.Errorf("40 records of 10 KiB and one of 100 KiB came in %d pages, want 15 (3 to a page, the big one alone)", pages)
	}
}

func TestOneEtcdWatchPerRollout(t *testing.T) {
	s := storetest.Open(t)
	putRollout(t, s, "r-1", 10, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
	putRollout(t, s, "r-2", 10, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
	h := newHub(t, s, 100, 100)
	var ks []*taken
	for i := range 20 {
		ks = append(ks, join(t, h, fmt.Sprintf("user/u%d", i%3), "r-1", 0, 0))
	}
	for _, k := range ks {
		k.until("the snapshot", (*taken).snapshotDone)
	}
	setNodes(t, s, "r-1", "changed", 3)
	for _, k := range ks {
		k.until("the change", func(k *taken) bool { return k.nodes[nodeName(3)].GetError() == "changed" })
	}
	if got := etcdWatchesBecome(h, 1); got != 1 {
		t.Errorf("20 watchers of one rollout opened %d etcd watches, want 1", got)
	}
	other := join(t, h, "user/u1", "r-2", 0, 0)
	other.until("the snapshot", (*taken).snapshotDone)
	if got := etcdWatchesBecome(h, 2); got != 2 {
		t.Errorf("a second rollout: %d etcd watches in all, want 2", got)
	}
	// The last watcher of r-1 leaving stops its feed; a new one starts
	// the next.
	for _, k := range ks {
		k.w.Leave()
	}
	again := join(t, h, "user/u1", "r-1", 0, 0)
	again.until("the snapshot", (*taken).snapshotDone)
	if again.nodes[nodeName(3)].GetError() != "changed" {
		t.Errorf("new feed: node 3 = %v", again.nodes[nodeName(3)])
	}
	if got := etcdWatchesBecome(h, 3); got != 3 {
		t.Errorf("after r-1's feed restarted: %d etcd watches, want 3", got)
	}
}

// etcdWatchesBecome waits up to 5 s for h to have opened want etcd
// watches and returns how many it has: a feed serves its snapshot before
// it opens its watch, so a watcher may see the snapshot first.
func etcdWatchesBecome(h *Hub, want int64) int64 {
	deadline := time.Now().Add(5 * time.Second)
	for h.EtcdWatches() < want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return h.EtcdWatches()
}

func TestSlowWatcherCoalesces(t *testing.T) {
	s := storetest.Open(t)
	const nodes, rounds = 50, 20
	putRollout(t, s, "r-1", nodes, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
	h := newHub(t, s, 10, 10)
	slow := join(t, h, "user/slow", "r-1", 0, 0)
	slow.until("the snapshot", (*taken).snapshotDone)
	fast := join(t, h, "user/fast", "r-1", 0, 0)
	fast.until("the snapshot", (*taken).snapshotDone)
	all := make([]int, nodes)
	for i := range all {
		all[i] = i
	}
	last := fmt.Sprintf("round %d", rounds-1)
	allAt := func(text string) func(k *taken) bool {
		return func(k *taken) bool {
			for i := range nodes {
				if k.nodes[nodeName(i)].GetError() != text {
					return false
				}
			}
			return true
		}
	}
	for r := range rounds {
		text := fmt.Sprintf("round %d", r)
		setNodes(t, s, "r-1", text, all...)
		// The fast watcher keeps up; the slow one takes nothing.
		fast.until(text, allAt(text))
	}
	setRollout(t, s, "r-1", outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, "still going")
	fast.until("the rollout change", func(k *taken) bool { return k.r.GetMessage() == "still going" })

	// All the slow watcher holds is a bit per node.
	slow.w.feed.mu.Lock()
	words, pending := len(slow.w.dirty), len(slow.w.pending)
	slow.w.feed.mu.Unlock()
	if words > (nodes+63)/64 || pending != 0 {
		t.Errorf("slow watcher holds %d bitset words and %d pending changes, want <= %d and 0", words, pending, (nodes+63)/64)
	}
	before := len(slow.resps)
	slow.until("the last round", func(k *taken) bool { return allAt(last)(k) && k.r.GetMessage() == "still going" })
	if got := slow.nodeCount(before); got != nodes {
		t.Errorf("slow watcher got %d node states for %d rounds of %d nodes, want %d (the latest of each)", got, rounds, nodes, nodes)
	}
	// The rollout changed after the nodes: it comes last.
	if m := slow.resps[len(slow.resps)-1]; m.GetRollout() == nil {
		t.Errorf("last response %v, want the rollout", m)
	}
}

func TestResumeSendsWhatChangedAfter(t *testing.T) {
	s := storetest.Open(t)
	putRollout(t, s, "r-1", 10, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
	h := newHub(t, s, 10, 10)
	k := join(t, h, "user/a", "r-1", 0, 0)
	k.until("the snapshot", (*taken).snapshotDone)
	from := k.resps[len(k.resps)-1].GetRevision()

	setNodes(t, s, "r-1", "a", 2, 5) // one transaction: one revision
	setNodes(t, s, "r-1", "b", 7)
	setNodes(t, s, "r-1", "c", 2)
	k.until("the changes", func(k *taken) bool { return k.nodes[nodeName(2)].GetError() == "c" })

	for _, tc := range []struct {
		name string
		from int64
		want map[string]string // node -> error text
	}{
		{name: "from the snapshot", from: from, want: map[string]string{nodeName(5): "a", nodeName(7): "b", nodeName(2): "c"}},
		{name: "after the first change", from: from + 1, want: map[string]string{nodeName(7): "b", nodeName(2): "c"}},
		{name: "after all", from: from + 3, want: map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := join(t, h, "user/b", "r-1", tc.from, PageSize)
			if len(tc.want) > 0 {
				r.until("the changes", func(r *taken) bool { return len(r.nodes) == len(tc.want) })
			}
			// Nothing else is pending: one more Take sends nothing.
			resps, end, err := r.w.Take()
			if err != nil || end || len(resps) != 0 {
				t.Fatalf("Take after the changes = %d responses, %v, %v; want none", len(resps), end, err)
			}
			for id, text := range tc.want {
				if got := r.nodes[id].GetError(); got != text {
					t.Errorf("%s: %q, want %q", id, got, text)
				}
			}
			if len(r.nodes) != len(tc.want) {
				t.Errorf("resumed from %d: nodes %v, want %v", tc.from, keys(r.nodes), tc.want)
			}
			for _, m := range r.resps {
				if m.GetRevision() <= tc.from {
					t.Errorf("resumed from %d: a response at revision %d", tc.from, m.GetRevision())
				}
				if m.GetSnapshotEnd() != nil {
					t.Errorf("resumed watch sent a snapshot")
				}
			}
		})
	}
}

func keys(m map[string]*outpostv1.RolloutNode) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A response's revision is a safe resume point: nodes written by one
// transaction share a revision, and only the response that completes
// them carries it.
func TestRevisionCoversWholeTransactions(t *testing.T) {
	s := storetest.Open(t)
	putRollout(t, s, "r-1", 10, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
	h := newHub(t, s, 10, 10)
	k := join(t, h, "user/a", "r-1", 0, 0)
	k.until("the snapshot", (*taken).snapshotDone)
	start := len(k.resps)
	from := k.resps[start-1].GetRevision()
	setNodes(t, s, "r-1", "x", 1, 4, 8)
	k.until("the change", func(k *taken) bool { return k.nodes[nodeName(8)].GetError() == "x" })
	var revs []int64
	for _, m := range k.resps[start:] {
		revs = append(revs, m.GetRevision())
	}
	want := []int64{from, from, from + 1}
	if fmt.Sprint(revs) != fmt.Sprint(want) {
		t.Errorf("three nodes of one transaction at %d came at revisions %v, want %v", from+1, revs, want)
	}
}

func TestFeedEnds(t *testing.T) {
	s := storetest.Open(t)
	h := newHub(t, s, 10, 10)

	t.Run("NoSuchRollout", func(t *testing.T) {
		k := join(t, h, "user/a", "r-404", 0, 0)
		if err := takeErr(t, k.w); !errors.Is(err, ErrNotFound) {
			t.Errorf("watch of a missing rollout: %v, want ErrNotFound", err)
		}
	})
	t.Run("Deleted", func(t *testing.T) {
		putRollout(t, s, "r-del", 2, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
		k := join(t, h, "user/a", "r-del", 0, 0)
		k.until("the snapshot", (*taken).snapshotDone)
		if _, err := s.Delete(ctxT(t), store.RolloutKey("r-del")); err != nil {
			t.Fatal(err)
		}
		if err := takeErr(t, k.w); !errors.Is(err, ErrNotFound) {
			t.Errorf("watch of a deleted rollout: %v, want ErrNotFound", err)
		}
		// A failed feed is replaced at the next Join.
		putRollout(t, s, "r-del", 2, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
		again := join(t, h, "user/a", "r-del", 0, 0)
		again.until("the snapshot", (*taken).snapshotDone)
	})
	t.Run("Terminal", func(t *testing.T) {
		putRollout(t, s, "r-t", 2, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
		k := join(t, h, "user/a", "r-t", 0, PageSize)
		k.until("the snapshot", (*taken).snapshotDone)
		setNodes(t, s, "r-t", "done", 0, 1)
		setRollout(t, s, "r-t", outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED, "")
		setNodes(t, s, "r-t", "after the end", 0)
		k.until("the end", func(k *taken) bool { return k.ended })
		if k.r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED || k.nodes[nodeName(1)].GetError() != "done" {
			t.Errorf("ended with rollout %v and node 1 %v", k.r.GetState(), k.nodes[nodeName(1)])
		}
		// A resume from the end: nothing; a new watch: a snapshot, then the end.
		last := k.resps[len(k.resps)-1].GetRevision()
		r := join(t, h, "user/a", "r-t", last, 0)
		if resps, end, err := r.w.Take(); len(resps) != 0 || !end || err != nil {
			t.Errorf("resume at the end: %d responses, %v, %v; want none and the end", len(resps), end, err)
		}
		n := join(t, h, "user/a", "r-t", 0, 0)
		n.until("the end", func(k *taken) bool { return k.ended })
		if !n.snapshotDone() {
			t.Errorf("a watch of an ended rollout did not end with its snapshot: %v", n.resps[len(n.resps)-1])
		}
	})
	t.Run("Close", func(t *testing.T) {
		putRollout(t, s, "r-c", 2, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
		h2 := newHub(t, s, 10, 10)
		k := join(t, h2, "user/a", "r-c", 0, 0)
		k.until("the snapshot", (*taken).snapshotDone)
		h2.Close()
		if err := takeErr(t, k.w); !errors.Is(err, ErrClosed) {
			t.Errorf("after Close: %v, want ErrClosed", err)
		}
		if _, err := h2.Join("user/a", "r-c", 0, 0); !errors.Is(err, ErrClosed) {
			t.Errorf("Join after Close: %v, want ErrClosed", err)
		}
	})
}

// takeErr takes until Take fails, and returns the error.
func takeErr(t *testing.T, w *Watcher) error {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		resps, end, err := w.Take()
		if err != nil {
			return err
		}
		if end {
			t.Fatal("watch ended without an error")
		}
		if len(resps) > 0 {
			continue
		}
		select {
		case <-w.Ready():
		case <-deadline.C:
			t.Fatalf("no error within %v", waitLimit)
		}
	}
}

// Watchers that send pages send the rollout with its batches' node counts
// instead of their node ids; the others send it whole.
func TestPagesGetBriefRollouts(t *testing.T) {
	s := storetest.Open(t)
	putRollout(t, s, "r-1", 3, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
	r := &outpostv1.Rollout{Id: "r-1", State: outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, Message: "m", Stages: []*outpostv1.Stage{{
		Name: "rolling", MaxFailPercent: 10, Batches: []*outpostv1.Batch{
			{Index: 0, NodeIds: []string{nodeName(0), nodeName(1)}},
			{Index: 1, NodeIds: []string{nodeName(2)}},
		},
	}}}
	if err := s.Put(ctxT(t), store.RolloutKey("r-1"), r); err != nil {
		t.Fatal(err)
	}
	h := newHub(t, s, 10, 10)
	whole := join(t, h, "user/a", "r-1", 0, 0)
	whole.until("the snapshot", (*taken).snapshotDone)
	paged := join(t, h, "user/a", "r-1", 0, PageSize)
	paged.until("the snapshot", (*taken).snapshotDone)
	if !proto.Equal(whole.r, r) {
		t.Errorf("per-node watcher's rollout = %v, want it whole: %v", whole.r, r)
	}
	want := proto.CloneOf(r)
	for _, b := range want.Stages[0].Batches {
		b.NodeCount, b.NodeIds = int32(len(b.NodeIds)), nil
	}
	if !proto.Equal(paged.r, want) {
		t.Errorf("paged watcher's rollout = %v, want %v", paged.r, want)
	}
	// The same after a change.
	r.Message = "changed"
	want.Message = "changed"
	if err := s.Put(ctxT(t), store.RolloutKey("r-1"), r); err != nil {
		t.Fatal(err)
	}
	paged.until("the change", func(k *taken) bool { return k.r.GetMessage() == "changed" })
	whole.until("the change", func(k *taken) bool { return k.r.GetMessage() == "changed" })
	if !proto.Equal(paged.r, want) || !proto.Equal(whole.r, r) {
		t.Errorf("after a change: paged %v, whole %v", paged.r, whole.r)
	}
}

func TestConfig(t *testing.T) {
	s := storetest.Open(t)
	for _, tc := range []struct {
		cfg     Config
		wantErr string
		per     int
		total   int
	}{
		{cfg: Config{}, wantErr: "Store is required"},
		{cfg: Config{Store: s, MaxPerCaller: -1}, wantErr: "negative"},
		{cfg: Config{Store: s, MaxTotal: -5}, wantErr: "negative"},
		{cfg: Config{Store: s}, per: DefaultMaxPerCaller, total: DefaultMaxTotal},
		{cfg: Config{Store: s, MaxPerCaller: 1, MaxTotal: 2}, per: 1, total: 2},
	} {
		c := tc.cfg
		err := c.CheckAndSetDefaults()
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("CheckAndSetDefaults(%+v) = %v, want %q", tc.cfg, err, tc.wantErr)
			}
			continue
		}
		if err != nil || c.MaxPerCaller != tc.per || c.MaxTotal != tc.total {
			t.Errorf("CheckAndSetDefaults(%+v) = %v, caps %d/%d; want %d/%d", tc.cfg, err, c.MaxPerCaller, c.MaxTotal, tc.per, tc.total)
		}
	}
}

// Every watcher that asks for pages of PageSize sends the same encoded
// pages: encoded once, shared, never copied per watcher.
func TestSnapshotPagesEncodedOnce(t *testing.T) {
	s := storetest.Open(t)
	putRollout(t, s, "r-1", 2500, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING)
	h := newHub(t, s, 10, 10)
	var raws [][][]byte
	for range 2 {
		k := join(t, h, "user/a", "r-1", 0, PageSize)
		var raw [][]byte
		for !k.snapshotDone() {
			resps, _, err := k.w.Take()
			if err != nil {
				t.Fatal(err)
			}
			if len(resps) == 0 {
				select {
				case <-k.w.Ready():
				case <-time.After(waitLimit):
					t.Fatal("no snapshot")
				}
			}
			for _, m := range resps {
				if u := m.ProtoReflect().GetUnknown(); len(u) > 0 {
					raw = append(raw, u)
				}
			}
			k.add(resps)
		}
		raws = append(raws, raw)
	}
	// The rollout, then the pages.
	if len(raws[0]) < 4 || len(raws[0]) != len(raws[1]) {
		t.Fatalf("encoded events: %d and %d, want the same number, 4 or more", len(raws[0]), len(raws[1]))
	}
	for i := range raws[0] {
		if &raws[0][i][0] != &raws[1][i][0] {
			t.Errorf("event %d was encoded for each watcher", i)
		}
	}
}
