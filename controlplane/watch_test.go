package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/pki/enroll"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// watchReader reads a WatchRollout stream in the test goroutine.
type watchReader struct {
	t      *testing.T
	stream grpc.ServerStreamingClient[outpostv1.WatchRolloutResponse]
	cancel context.CancelFunc
	last   int64
	nodes  map[string]*outpostv1.RolloutNode
	r      *outpostv1.Rollout
	steps  int
}

func watch(t *testing.T, c *client, id string, from int64) *watchReader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	stream, err := c.WatchRollout(ctx, &outpostv1.WatchRolloutRequest{Id: id, FromRevision: from})
	if err != nil {
		cancel()
		t.Fatalf("WatchRollout: %v", err)
	}
	w := &watchReader{t: t, stream: stream, cancel: cancel, last: from, nodes: map[string]*outpostv1.RolloutNode{}}
	t.Cleanup(cancel)
	return w
}

// next reads one response; it fails the test on errors other than EOF,
// which it returns as nil.
func (w *watchReader) next() *outpostv1.WatchRolloutResponse {
	w.t.Helper()
	m, err := w.stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		w.t.Fatalf("watch: %v", err)
	}
	if m.GetRevision() < w.last {
		w.t.Fatalf("watch revision went back from %d to %d", w.last, m.GetRevision())
	}
	w.last = m.GetRevision()
	switch x := m.GetEvent().(type) {
	case *outpostv1.WatchRolloutResponse_Rollout:
		w.r = x.Rollout
	case *outpostv1.WatchRolloutResponse_Node:
		w.nodes[x.Node.GetNodeId()] = x.Node
	case *outpostv1.WatchRolloutResponse_NodePage:
		for _, n := range x.NodePage.GetNodes() {
			w.nodes[n.GetNodeId()] = n
		}
	case *outpostv1.WatchRolloutResponse_StepEvent:
		w.steps++
	}
	return m
}

// until reads until ok accepts the state seen so far.
func (w *watchReader) until(what string, ok func(w *watchReader) bool) {
	w.t.Helper()
	for i := 0; i < 10000; i++ {
		if ok(w) {
			return
		}
		if w.next() == nil {
			w.t.Fatalf("watch ended while waiting for %s", what)
		}
	}
	w.t.Fatalf("watch: no %s after 10000 messages", what)
}

func TestWatchRolloutSnapshotAndResume(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 4, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.connect(s.Addr())
	defer gw.disconnect()
	r := createRollout(t, c, rollingPlan("1", 0), digest)

	w := watch(t, c, r.GetId(), 0)
	// Snapshot: the rollout, every node, then snapshot_end, all at one revision.
	first := w.next()
	if first.GetRollout().GetId() != r.GetId() {
		t.Fatalf("first message = %v, want the rollout", first)
	}
	for i := 0; i < 4; i++ {
		if m := w.next(); m.GetNode() == nil || m.GetRevision() != first.GetRevision() {
			t.Fatalf("snapshot message %d = %v, want a node at revision %d", i, m, first.GetRevision())
		}
	}
	if m := w.next(); m.GetSnapshotEnd() == nil {
		t.Fatalf("after the nodes got %v, want snapshot_end", m)
	}

	a := gw.waitAssigned(1)[0]
	gw.finishNode(a.GetNode().GetId(), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
	w.until("first node succeeded", func(w *watchReader) bool {
		return w.nodes[nodeID(0)].GetState() == outpostv1.NodeState_NODE_STATE_SUCCEEDED
	})
	// A response claims its revision only once every change written at it
	// was sent, so the one that brought the first node's success may carry
	// an earlier revision; the next change (the second node starting)
	// carries a later one.
	succeeded := w.last
	w.until("a change after the first node's success", func(w *watchReader) bool { return w.last > succeeded })
	// The leader also fans out step events to watchers on its replica.
	w.until("step events", func(w *watchReader) bool { return w.steps >= 2 })
	resumeFrom := w.last
	w.cancel()

	// Progress while nobody watches.
	for i := 1; i < 4; i++ {
		a := gw.waitAssigned(1)[0]
		gw.finishNode(a.GetNode().GetId(), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
	}
	waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))

	// Resuming delivers everything missed, without a snapshot, then ends.
	w2 := watch(t, c, r.GetId(), resumeFrom)
	for {
		m := w2.next()
		if m == nil {
			break
		}
		if m.GetSnapshotEnd() != nil {
			t.Fatalf("resumed watch sent a snapshot")
		}
		if m.GetRevision() <= resumeFrom {
			t.Errorf("resumed watch sent revision %d, not after %d", m.GetRevision(), resumeFrom)
		}
	}
	if w2.r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Errorf("last rollout seen = %v, want SUCCEEDED", w2.r.GetState())
	}
	for i := 1; i < 4; i++ {
		if n := w2.nodes[nodeID(i)]; n.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
			t.Errorf("resumed watch: node %s last seen as %v", nodeID(i), n.GetState())
		}
	}
	if _, ok := w2.nodes[nodeID(0)]; ok {
		t.Errorf("resumed watch re-sent %s, which changed before the resume point", nodeID(0))
	}

	// A finished rollout: snapshot, then the stream ends.
	w3 := watch(t, c, r.GetId(), 0)
	n := 0
	for w3.next() != nil {
		n++
	}
	if n != 6 || w3.r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Errorf("watch of a finished rollout: %d messages, state %v; want 6 and SUCCEEDED", n, w3.r.GetState())
	}
	// Resuming from the end: nothing left.
	w4 := watch(t, c, r.GetId(), w3.last)
	if m := w4.next(); m != nil {
		t.Errorf("resume at the end sent %v", m)
	}
}

func withWatchCaps(perCaller, total int) cpOption {
	return func(c *Config) { c.MaxWatchersPerCaller, c.MaxWatchers = perCaller, total }
}

// heldRollout creates a rollout of n nodes that waits for approval, so
// that the engine leaves its node records alone.
func heldRollout(t *testing.T, c *client, n int) *outpostv1.Rollout {
	t.Helper()
	applyNodes(t, c, n, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	spec := rollingPlan("10%", 0)
	spec.Approval = &outpostv1.PlanApproval{Required: true}
	r := createRollout(t, c, spec, digest)
	if r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL {
		t.Fatalf("created %v, want PENDING_APPROVAL", r.GetState())
	}
	return r
}

// openWatch starts a watch and returns it once its first response came,
// or the error the stream ended with first.
func openWatch(t *testing.T, c *client, req *outpostv1.WatchRolloutRequest) (*watchReader, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	stream, err := c.WatchRollout(ctx, req)
	if err != nil {
		cancel()
		return nil, err
	}
	first, err := stream.Recv()
	if err != nil {
		cancel()
		return nil, err
	}
	w := &watchReader{t: t, stream: stream, cancel: cancel, nodes: map[string]*outpostv1.RolloutNode{}}
	w.last = first.GetRevision()
	w.r = first.GetRollout()
	return w, nil
}

func TestWatchRolloutCaps(t *testing.T) {
	s := startCP(t, t.TempDir(), withWatchCaps(2, 3))
	admin := dial(t, s.Addr())
	r := heldRollout(t, admin, 3)
	req := &outpostv1.WatchRolloutRequest{Id: r.GetId()}

	a1, err := openWatch(t, admin, req)
	if err != nil {
		t.Fatalf("first watch: %v", err)
	}
	if _, err := openWatch(t, admin, req); err != nil {
		t.Fatalf("second watch: %v", err)
	}
	_, err = openWatch(t, admin, req)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "holds 2, the most per caller") ||
		!strings.Contains(err.Error(), "--max-watchers-per-caller") || !strings.Contains(err.Error(), "user/") {
		t.Fatalf("third watch of one caller: %v, want RESOURCE_EXHAUSTED naming the caller and the per-caller cap", err)
	}
	// Another person still gets one: the total is 3.
	vera := userClient(t, s, "vera", pki.RoleViewer)
	if _, err := openWatch(t, vera, req); err != nil {
		t.Fatalf("vera's watch: %v", err)
	}
	walt := userClient(t, s, "walt", pki.RoleViewer)
	_, err = openWatch(t, walt, req)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "at most 3 at once") || !strings.Contains(err.Error(), "--max-watchers") {
		t.Fatalf("fourth watch: %v, want RESOURCE_EXHAUSTED naming the total cap", err)
	}
	// A watch that ends makes room (once the server saw it end).
	a1.cancel()
	deadline := time.Now().Add(waitLimit)
	for {
		_, err := openWatch(t, walt, req)
		if err == nil {
			break
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("walt's watch after one ended: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWatchRolloutNodePages(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	const nodes = 5000
	r := heldRollout(t, c, nodes)

	if _, err := openWatch(t, c, &outpostv1.WatchRolloutRequest{Id: r.GetId(), NodePageSize: -1}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "node_page_size") {
		t.Errorf("node_page_size -1: %v, want INVALID_ARGUMENT naming node_page_size", err)
	}
	for _, tc := range []struct {
		pageSize int32
		maxNodes int // per response
	}{
		{pageSize: 0, maxNodes: 1},
		{pageSize: 1000, maxNodes: 1000},
		{pageSize: 125, maxNodes: 125},
		{pageSize: 1 << 30, maxNodes: 1000},
	} {
		t.Run(fmt.Sprint(tc.pageSize), func(t *testing.T) {
			w, err := openWatch(t, c, &outpostv1.WatchRolloutRequest{Id: r.GetId(), NodePageSize: tc.pageSize})
			if err != nil {
				t.Fatal(err)
			}
			if w.r.GetId() != r.GetId() {
				t.Fatalf("first response carries rollout %q, want %s", w.r.GetId(), r.GetId())
			}
			// With pages, batches carry their node count, not their node ids.
			counted, listed := 0, 0
			for _, b := range w.r.GetStages()[0].GetBatches() {
				counted += int(b.GetNodeCount())
				listed += len(b.GetNodeIds())
			}
			if tc.pageSize > 0 && (counted != nodes || listed != 0) || tc.pageSize == 0 && (counted != 0 || listed != nodes) {
				t.Errorf("rollout batches count %d nodes and list %d", counted, listed)
			}
			rev := w.last
			var ids []string
			resps := 0
			for {
				m := w.next()
				if m == nil {
					t.Fatal("stream ended before snapshot_end")
				}
				if m.GetRevision() != rev {
					t.Fatalf("snapshot response at revision %d, want %d", m.GetRevision(), rev)
				}
				if m.GetSnapshotEnd() != nil {
					break
				}
				page := m.GetNodePage().GetNodes()
				if n := m.GetNode(); n != nil {
					page = append(page, n)
				}
				if len(page) == 0 || len(page) > tc.maxNodes {
					t.Fatalf("a response with %d nodes, want 1 to %d", len(page), tc.maxNodes)
				}
				if size := proto.Size(m); size > 32<<10 {
					t.Fatalf("a response of %d nodes is %d bytes, over 32 KiB", len(page), size)
				}
				resps++
				for _, n := range page {
					ids = append(ids, n.GetNodeId())
				}
			}
			if least := (nodes + tc.maxNodes - 1) / tc.maxNodes; resps < least || tc.maxNodes < 200 && resps != least {
				t.Errorf("%d node-carrying responses, want %d (or more for pages the 32 KiB bound cuts)", resps, least)
			}
			if len(ids) != nodes {
				t.Fatalf("snapshot of %d nodes, want %d", len(ids), nodes)
			}
			for i, id := range ids {
				if id != nodeID(i) {
					t.Fatalf("snapshot node %d is %s, want %s: each once, in id order", i, id, nodeID(i))
				}
			}
		})
	}
}

// etcdWatchers reads the in-process etcd's count of watchers.
func etcdWatchers(t *testing.T) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "etcd_debugging_mvcc_watcher_total" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no etcd_debugging_mvcc_watcher_total metric")
	return 0
}

func TestWatchRolloutSharesOneEtcdWatch(t *testing.T) {
	s := startCP(t, t.TempDir(), withWatchCaps(50, 50))
	c := dial(t, s.Addr())
	r := heldRollout(t, c, 10)
	before := etcdWatchers(t)
	const n = 20
	var ws []*watchReader
	for range n {
		w, err := openWatch(t, c, &outpostv1.WatchRolloutRequest{Id: r.GetId()})
		if err != nil {
			t.Fatal(err)
		}
		w.until("snapshot_end", func(w *watchReader) bool { return len(w.nodes) == 10 })
		ws = append(ws, w)
	}
	// A change every watcher sees: each one's way to etcd is open.
	rn := rolloutNodes(t, c, r.GetId())[nodeID(3)]
	rn.Error = "changed"
	if err := s.store.Put(ctxT(t), store.RolloutNodeKey(r.GetId(), nodeID(3)), rn); err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		w.until("the change", func(w *watchReader) bool { return w.nodes[nodeID(3)].GetError() == "changed" })
	}
	if got := etcdWatchers(t) - before; got >= n/2 {
		t.Errorf("%d watchers of one rollout hold %v etcd watchers, want about 1", n, got)
	}
	if got := s.watches.EtcdWatches(); got != 1 {
		t.Errorf("%d watchers of one rollout opened %d etcd watches, want 1", n, got)
	}
}

// A watcher whose client stops reading costs the others nothing and the
// server no more than a mark per node: when it reads again it gets each
// node's latest state, not every change it missed.
func TestWatchRolloutSlowWatcher(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	const nodes, rounds = 50, 20
	r := heldRollout(t, c, nodes)
	req := &outpostv1.WatchRolloutRequest{Id: r.GetId()}

	// The slow client's stream window stays at 64 KiB: the server's sends
	// to it block soon after it stops reading.
	v, _ := admins.Load(s.Addr())
	conn, err := enroll.Dial(s.Addr(), v.(*pki.Credential), grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	slow, err := openWatch(t, &client{ControlPlaneServiceClient: outpostv1.NewControlPlaneServiceClient(conn)}, req)
	if err != nil {
		t.Fatal(err)
	}
	slow.until("the snapshot", func(w *watchReader) bool { return len(w.nodes) == nodes })
	fast, err := openWatch(t, c, req)
	if err != nil {
		t.Fatal(err)
	}
	fast.until("the snapshot", func(w *watchReader) bool { return len(w.nodes) == nodes })

	recs := rolloutNodes(t, c, r.GetId())
	pad := strings.Repeat("x", 8<<10)
	roundIs := func(text string) func(w *watchReader) bool {
		return func(w *watchReader) bool {
			for i := range nodes {
				if !strings.HasPrefix(w.nodes[nodeID(i)].GetError(), text) {
					return false
				}
			}
			return true
		}
	}
	for round := range rounds {
		text := fmt.Sprintf("round %d ", round)
		var ops []clientv3.Op
		for i := range nodes {
			rn := recs[nodeID(i)]
			rn.Error = text + pad
			op, err := store.OpPut(store.RolloutNodeKey(r.GetId(), nodeID(i)), rn)
			if err != nil {
				t.Fatal(err)
			}
			ops = append(ops, op)
		}
		if err := s.store.Txn(ctxT(t), nil, ops...); err != nil {
			t.Fatal(err)
		}
		// The fast watcher keeps up while the slow one reads nothing.
		fast.until(text, roundIs(text))
	}
	last := fmt.Sprintf("round %d ", rounds-1)
	got := 0
	slow.until(last, func(w *watchReader) bool {
		got++
		return roundIs(last)(w)
	})
	// Up to about 16 responses of 8 KiB were under way when the client
	// stopped reading; then each node comes at most twice (the changes
	// taken before the client caught up, and the ones after).
	if got > 3*nodes {
		t.Errorf("the slow watcher got %d responses for %d rounds of %d nodes, want at most %d: the latest of each node, not every change", got, rounds, nodes, 3*nodes)
	}
}

func TestConfigRejectsNegativeWatchCaps(t *testing.T) {
	for _, c := range []Config{
		{DataDir: t.TempDir(), MaxWatchersPerCaller: -1},
		{DataDir: t.TempDir(), MaxWatchers: -1},
	} {
		if err := c.CheckAndSetDefaults(); err == nil || !strings.Contains(err.Error(), "MaxWatchers") {
			t.Errorf("CheckAndSetDefaults(caps %d, %d) = %v, want an error naming the cap", c.MaxWatchersPerCaller, c.MaxWatchers, err)
		}
	}
}
