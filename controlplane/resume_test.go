package controlplane

import (
	"context"
	"slices"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/outposthq/outpost/controlplane/rollout"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func TestGatewayReconnect(t *testing.T) {
	tests := []struct {
		name string
		// report picks which running assignments the gateway reports in
		// its new hello (by node index 1..3).
		report []int
		// resent are the nodes that must be assigned again.
		resent []int
	}{
		{"reports two of three", []int{1, 2}, []int{3}},
		{"restarted, reports none", nil, []int{1, 2, 3}},
		{"reports all", []int{1, 2, 3}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startCP(t, t.TempDir())
			c := dial(t, s.Addr())
			applyNodes(t, c, 4, nil)
			digest := upload(t, c, "a.tar.gz", []byte("a"))
			gw := newFakeGateway(t, "gw", "dc1", 10)
			gw.connect(s.Addr())
			defer gw.disconnect()
			r := createRollout(t, c, rollingPlan("100%", 0), digest)

			byNode := map[string]string{}
			for _, a := range gw.waitAssigned(4) {
				byNode[a.GetNode().GetId()] = a.GetAssignmentId()
			}
			gw.finishNode(nodeID(0), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
			gw.waitAcked()
			gw.disconnect()

			var active []string
			for _, i := range tt.report {
				active = append(active, byNode[nodeID(i)])
			}
			gw.connect(s.Addr(), active...)
			var want []string
			for _, i := range tt.resent {
				want = append(want, nodeID(i))
			}
			var got []string
			if len(want) > 0 {
				got = idsOf(gw.waitAssigned(len(want)))
				sort.Strings(got)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("re-sent assignments (-want +got):\n%s", diff)
			}
			gw.sync()
			if n := gw.pending(); n != 0 {
				t.Fatalf("%d more assignments than expected", n)
			}
			// Results for reported (old) and re-sent (new) assignments count.
			for i := 1; i < 4; i++ {
				gw.finishNode(nodeID(i), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
			}
			done := waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
			if done.GetNodeCounts().GetSucceeded() != 4 {
				t.Errorf("counts = %v", done.GetNodeCounts())
			}
			counts := gw.counts()
			for i := 0; i < 4; i++ {
				wantN := 1
				if slices.Contains(tt.resent, i) {
					wantN = 2
				}
				if counts[nodeID(i)] != wantN {
					t.Errorf("node %s assigned %d times, want %d", nodeID(i), counts[nodeID(i)], wantN)
				}
			}
		})
	}
}

func TestOrphanReassignedToAnotherGateway(t *testing.T) {
	// A gateway that does not come back within the grace loses its
	// assignments to another gateway of the datacenter.
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 2, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	gw1 := newFakeGateway(t, "gw-1", "dc1", 10)
	gw1.connect(s.Addr())
	r := createRollout(t, c, rollingPlan("100%", 0), digest)
	first := map[string]string{} // node -> gw-1's assignment
	for _, a := range gw1.waitAssigned(2) {
		first[a.GetNode().GetId()] = a.GetAssignmentId()
		if a.GetTakeoverLockOf() != "" {
			t.Errorf("first assignment of %s may take over lock %q", a.GetNode().GetId(), a.GetTakeoverLockOf())
		}
	}
	gw1.disconnect()

	gw2 := newFakeGateway(t, "gw-2", "dc1", 10)
	gw2.auto = succeedAll
	gw2.connect(s.Addr())
	defer gw2.disconnect()
	done := waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	if got := gw2.counts(); got[nodeID(0)] != 1 || got[nodeID(1)] != 1 {
		t.Errorf("gw-2 got %v", got)
	}
	// gw-1 may have died holding the nodes' locks: gw-2 may take over
	// exactly those.
	gw2.mu.Lock()
	for _, a := range gw2.received {
		if want := first[a.GetNode().GetId()]; a.GetTakeoverLockOf() != want {
			t.Errorf("gw-2's assignment of %s may take over lock %q, want gw-1's %q", a.GetNode().GetId(), a.GetTakeoverLockOf(), want)
		}
	}
	gw2.mu.Unlock()
	for id, n := range rolloutNodes(t, c, r.GetId()) {
		if n.GetGateway() != "gw-2" {
			t.Errorf("node %s ran on %q, want gw-2", id, n.GetGateway())
		}
	}
	if done.GetNodeCounts().GetSucceeded() != 2 {
		t.Errorf("counts = %v", done.GetNodeCounts())
	}
}

func TestRestartResumesRollout(t *testing.T) {
	tests := []struct {
		name string
		// gatewayKeptRunning: the gateway reports its running assignment
		// after the restart, so the node is not assigned again.
		gatewayKeptRunning bool
	}{
		{"gateway restarted too", false},
		{"gateway kept running", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(telemetry.ProviderOptions(telemetry.Service{Name: telemetry.ServiceControlPlane}, sdktrace.WithSpanProcessor(rec))...)
			defer tp.Shutdown(context.Background())
			s1 := startCP(t, dir, withTracer(tp))
			c := dial(t, s1.Addr())
			applyNodes(t, c, 6, nil)
			digest := upload(t, c, "a.tar.gz", []byte("a"))
			gw := newFakeGateway(t, "gw", "dc1", 10)
			gw.connect(s1.Addr())
			defer gw.disconnect()
			r := createRollout(t, c, rollingPlan("2", 0), digest)

			for _, a := range gw.waitAssigned(2) {
				gw.finishNode(a.GetNode().GetId(), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
			}
			b1 := gw.waitAssigned(2)
			sort.Slice(b1, func(i, j int) bool { return b1[i].GetNode().GetId() < b1[j].GetNode().GetId() })
			gw.finishNode(nodeID(2), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
			gw.waitAcked() // durable before the crash
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			if err := s1.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			gw.disconnect()

			s2 := startCP(t, dir, withTracer(tp))
			c2 := dial(t, s2.Addr())
			var active []string
			if tt.gatewayKeptRunning {
				active = []string{b1[1].GetAssignmentId()}
			}
			gw.connect(s2.Addr(), active...)
			if !tt.gatewayKeptRunning {
				again := gw.waitAssigned(1)[0]
				if again.GetNode().GetId() != nodeID(3) || again.GetAssignmentId() == b1[1].GetAssignmentId() {
					t.Fatalf("after restart assigned %s (%s), want %s with a new assignment id", again.GetNode().GetId(), again.GetAssignmentId(), nodeID(3))
				}
				if again.GetEpoch() <= b1[1].GetEpoch() {
					t.Errorf("epoch after restart %d, want more than %d", again.GetEpoch(), b1[1].GetEpoch())
				}
			}
			gw.sync()
			if n := gw.pending(); n != 0 {
				t.Fatalf("%d unexpected assignments after restart", n)
			}
			gw.finishNode(nodeID(3), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
			for _, a := range gw.waitAssigned(2) {
				gw.finishNode(a.GetNode().GetId(), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
			}
			done := waitRollout(t, c2, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
			if done.GetNodeCounts().GetSucceeded() != 6 || done.GetTraceId() != r.GetTraceId() || r.GetTraceId() == "" {
				t.Errorf("done: counts %v trace %q (created with %q)", done.GetNodeCounts(), done.GetTraceId(), r.GetTraceId())
			}
			// Both terms' stage spans are in the rollout's one trace, under
			// its root.
			var terms []bool
			for _, sp := range rec.Ended() {
				if sp.Name() == rollout.SpanStage && sp.SpanContext().TraceID().String() == r.GetTraceId() {
					if sp.Parent().SpanID() != rollout.RootSpanID(r.GetId()) {
						t.Errorf("stage span's parent %v is not the rollout's root", sp.Parent().SpanID())
					}
					for _, kv := range sp.Attributes() {
						if kv.Key == "outpost.resumed" {
							terms = append(terms, kv.Value.AsBool())
						}
					}
				}
			}
			if !slices.Equal(terms, []bool{false, true}) {
				t.Errorf("stage spans in the trace, by resumed: %v, want [false true]", terms)
			}
			counts := gw.counts()
			for i := 0; i < 6; i++ {
				want := 1
				if i == 3 && !tt.gatewayKeptRunning {
					want = 2
				}
				if counts[nodeID(i)] != want {
					t.Errorf("node %s assigned %d times, want %d", nodeID(i), counts[nodeID(i)], want)
				}
			}
		})
	}
}
