package controlplane

import (
	"context"
	"errors"
	"io"
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/grpc"
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
