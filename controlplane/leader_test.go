package controlplane

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane/store/storetest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// connectOnce tries one gateway stream and returns how it ended.
func connectOnce(t *testing.T, c *client) error {
	t.Helper()
	stream, err := c.Connect(ctxT(t))
	if err != nil {
		return err
	}
	if err := stream.Send(&outpostv1.ConnectRequest{Msg: &outpostv1.ConnectRequest_Hello{Hello: &outpostv1.GatewayHello{Name: "probe", Datacenter: "dc1"}}}); err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

func TestFollowerRefusesLeaderWorkAndTakesOver(t *testing.T) {
	etcd := storetest.Open(t) // shared by both replicas, outlives them
	kek := filepath.Join(t.TempDir(), "ca.kek")
	s1 := startCP(t, t.TempDir(), withEtcd(etcd.Endpoints(), kek), withName("cp-1"))
	s2 := startCP(t, t.TempDir(), withEtcd(etcd.Endpoints(), kek), withName("cp-2"))
	c1, c2 := dial(t, s1.Addr()), dial(t, s2.Addr())
	applyNodes(t, c2, 4, nil)
	// Each replica has its own artifact store.
	upload(t, c1, "a.tar.gz", []byte("a"))
	digest := upload(t, c2, "a.tar.gz", []byte("a"))

	err := connectOnce(t, c2)
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "the leader is cp-1") {
		t.Fatalf("gateway on the follower: %v, want UNAVAILABLE naming cp-1", err)
	}

	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.connect(s1.Addr())
	defer gw.disconnect()
	// Created on the follower, driven by the leader.
	r := createRollout(t, c2, rollingPlan("2", 0), digest)
	_, err = c2.AbortRollout(ctxT(t), &outpostv1.AbortRolloutRequest{Id: r.GetId()})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("abort on the follower: %v, want UNAVAILABLE", err)
	}
	w := watch(t, c2, r.GetId(), 0) // the follower serves watches from etcd
	for _, a := range gw.waitAssigned(2) {
		gw.finishNode(a.GetNode().GetId(), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
	}
	waitRollout(t, c2, r.GetId(), "first batch", func(r *outpostv1.Rollout) bool { return r.GetNodeCounts().GetSucceeded() == 2 })
	gw.waitAssigned(2) // second batch running when the leader goes away

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := s1.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown leader: %v", err)
	}
	gw.disconnect()
	gw.connect(s2.Addr()) // retries until cp-2 leads; reports nothing running
	for _, a := range gw.waitAssigned(2) {
		gw.finishNode(a.GetNode().GetId(), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
	}
	waitRollout(t, c2, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	for w.next() != nil {
	}
	if w.r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Errorf("watch on the follower ended at %v", w.r.GetState())
	}
	if got := gw.counts(); got[nodeID(0)] != 1 || got[nodeID(1)] != 1 || got[nodeID(2)] != 2 || got[nodeID(3)] != 2 {
		t.Errorf("assignments per node = %v; want the first batch once and the interrupted batch twice", got)
	}
	// Both replicas appended to the audit log, before and after the
	// leader changed: one chain.
	checkAuditChain(t, s2)
}

func TestSilentGatewayIsDropped(t *testing.T) {
	s := startCP(t, t.TempDir(), func(c *Config) { c.heartbeatInterval = 100 * time.Millisecond })
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.silent = true
	gw.connect(s.Addr())
	defer gw.disconnect()
	deadline := time.Now().Add(waitLimit)
	for gw.streamErr() == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := gw.streamErr(); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("silent gateway's stream ended with %v, want DEADLINE_EXCEEDED", err)
	}
	// That a gateway that heartbeats stays is shown on a fake clock, in
	// gatewaylink's TestHeartbeatTimeoutOnTheClock.
}

func TestDuplicateReportsIgnored(t *testing.T) {
	// A gateway re-sends unacknowledged messages after a reconnect; the
	// control plane must apply each once.
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 2, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.connect(s.Addr())
	defer gw.disconnect()
	r := createRollout(t, c, rollingPlan("100%", 100), digest)
	as := gw.waitAssigned(2)
	byNode := map[string]*outpostv1.Assignment{}
	for _, a := range as {
		byNode[a.GetNode().GetId()] = a
	}
	gw.finishNode(nodeID(0), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
	gw.step(byNode[nodeID(1)].GetAssignmentId(), outpostv1.Step_STEP_UPLOAD, outpostv1.StepPhase_STEP_PHASE_STARTED) // seq 1
	gw.step(byNode[nodeID(1)].GetAssignmentId(), outpostv1.Step_STEP_VERIFY, outpostv1.StepPhase_STEP_PHASE_STARTED) // seq 2
	acked := gw.waitAcked()

	// Replays: node 0's result as a failure, node 1's first step again.
	gw.send(&outpostv1.ConnectRequest{Sequence: acked + 1, Msg: &outpostv1.ConnectRequest_NodeResult{NodeResult: &outpostv1.NodeResult{
		AssignmentId: byNode[nodeID(0)].GetAssignmentId(), NodeId: nodeID(0), State: outpostv1.NodeState_NODE_STATE_FAILED, Error: "replayed",
	}}})
	gw.send(&outpostv1.ConnectRequest{Sequence: acked + 2, Msg: &outpostv1.ConnectRequest_StepEvent{StepEvent: &outpostv1.AssignmentStepEvent{
		AssignmentId: byNode[nodeID(1)].GetAssignmentId(),
		Event:        &outpostv1.NodeStepEvent{Step: outpostv1.Step_STEP_UPLOAD, Phase: outpostv1.StepPhase_STEP_PHASE_STARTED, Seq: 1},
	}}})
	gw.send(&outpostv1.ConnectRequest{Sequence: acked + 3, Msg: &outpostv1.ConnectRequest_NodeResult{NodeResult: &outpostv1.NodeResult{
		AssignmentId: "no-such-assignment", NodeId: nodeID(1), State: outpostv1.NodeState_NODE_STATE_FAILED,
	}}})
	gw.mu.Lock()
	gw.seq = acked + 3
	gw.mu.Unlock()
	gw.waitAcked()

	nodes := rolloutNodes(t, c, r.GetId())
	if n := nodes[nodeID(0)]; n.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED || n.GetError() != "" {
		t.Errorf("node 0 after a replayed result = %v", n)
	}
	// A running node's progress is written lazily, within the engine's
	// progress interval (5 s) of its previous write.
	deadline := time.Now().Add(15 * time.Second)
	for {
		n := rolloutNodes(t, c, r.GetId())[nodeID(1)]
		if n.GetState() == outpostv1.NodeState_NODE_STATE_RUNNING && n.GetStep() == outpostv1.Step_STEP_VERIFY && n.GetLastEventSeq() == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("node 1 after a replayed step = %v, want RUNNING at VERIFY seq 2", n)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The welcome of a new stream tells the gateway what was applied.
	gw.disconnect()
	gw.connect(s.Addr(), byNode[nodeID(1)].GetAssignmentId())
	if got := gw.welcome.GetAckedSequence(); got != acked+3 {
		t.Errorf("welcome acked_sequence = %d, want %d", got, acked+3)
	}
	gw.finishNode(nodeID(1), outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
	done := waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	if done.GetNodeCounts().GetSucceeded() != 2 || done.GetNodeCounts().GetFailed() != 0 {
		t.Errorf("counts = %v", done.GetNodeCounts())
	}
}

func TestRefusedAssignments(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 1, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.refuse = "invalid assignment: no deploy spec"
	gw.connect(s.Addr())
	defer gw.disconnect()
	r := createRollout(t, c, rollingPlan("1", 100), digest)
	done := waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	n := rolloutNodes(t, c, r.GetId())[nodeID(0)]
	if n.GetState() != outpostv1.NodeState_NODE_STATE_FAILED || !strings.Contains(n.GetError(), "refused by gateway gw: invalid assignment") {
		t.Errorf("node = %v, want FAILED with the refusal", n)
	}
	if got := gw.counts()[nodeID(0)]; got != 5 {
		t.Errorf("offered %d times, want 5", got)
	}
	if done.GetNodeCounts().GetFailed() != 1 {
		t.Errorf("counts = %v", done.GetNodeCounts())
	}
}
