package audit_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/controlplane/audit"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// readMarkers returns the rollout's markers: the sequence each holds, by key.
func readMarkers(t *testing.T, s *store.Store, rolloutID string) map[string]int64 {
	t.Helper()
	resp, err := s.Client().Get(ctxT(t), store.AuditIndexRolloutPrefix(rolloutID), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, kv := range resp.Kvs {
		seq, err := strconv.ParseInt(string(kv.Value), 10, 64)
		if err != nil {
			t.Fatalf("marker %s holds %q, not a sequence", kv.Key, kv.Value)
		}
		out[string(kv.Key)] = seq
	}
	return out
}

const (
	succeeded  = outpostv1.NodeState_NODE_STATE_SUCCEEDED
	nodeFailed = outpostv1.NodeState_NODE_STATE_FAILED
	rolledBack = outpostv1.NodeState_NODE_STATE_ROLLED_BACK
	skipped    = outpostv1.NodeState_NODE_STATE_SKIPPED
	nodeRun    = outpostv1.NodeState_NODE_STATE_RUNNING
	nodePend   = outpostv1.NodeState_NODE_STATE_PENDING
)

// TestMarkers checks that the entries the engine makes carry their
// markers, written with them, and that the janitor deletes a marker with
// its entry unless a newer entry took it over.
func TestMarkers(t *testing.T) {
	s := storetest.Open(t)
	clk := newClock(t0)
	l := openLog(t, s, audit.Config{Now: clk.Now, Retention: 48 * time.Hour, SweepInterval: time.Hour, BatchDelay: time.Millisecond})
	ctx := ctxT(t)
	r := &outpostv1.Rollout{Id: "r-7", App: "billing"}
	l.RecordRolloutState(ctx, r, outpostv1.RolloutState_ROLLOUT_STATE_APPROVED, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, "")
	l.RecordRolloutNode(ctx, "r-7", &outpostv1.RolloutNode{NodeId: "n1", State: succeeded, AssignmentId: "r-7-n1-e5-1", Gateway: "gw"})
	l.RecordRolloutNode(ctx, "r-7", &outpostv1.RolloutNode{NodeId: "n2", State: skipped})
	l.RecordRolloutState(ctx, r, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED, "")
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	entries := listAll(t, l, audit.Query{RolloutID: "r-7"}, 100)
	if len(entries) != 4 {
		t.Fatalf("%d entries, want 4", len(entries))
	}
	// The running state is not marked: only ends are.
	want := map[string]int64{
		audit.NodeResultMarkerKey("r-7", "n1", succeeded, "r-7-n1-e5-1"):                   entries[1].GetSequence(),
		audit.NodeResultMarkerKey("r-7", "n2", skipped, ""):                                entries[2].GetSequence(),
		audit.RolloutStateMarkerKey("r-7", outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED): entries[3].GetSequence(),
	}
	markers := readMarkers(t, s, "r-7")
	if diff := cmp.Diff(want, markers); diff != "" {
		t.Errorf("markers (-want +got):\n%s", diff)
	}
	for k := range markers {
		// The marker and its entry were put by one transaction.
		resp, err := s.Client().Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := resp.Kvs[0].ModRevision, entryRevision(t, s, markers[k]); got != want {
			t.Errorf("marker %s written at revision %d, its entry at %d: want one transaction", k, got, want)
		}
	}
	if got := entries[1].GetDetails()["assignment"]; got != "r-7-n1-e5-1" {
		t.Errorf("node result detail assignment = %q, want r-7-n1-e5-1", got)
	}

	// A day later n1's result is recorded again (as Reconcile may): the
	// marker holds the newer entry and outlives the older one.
	clk.Add(24 * time.Hour)
	l.RecordRolloutNode(ctx, "r-7", &outpostv1.RolloutNode{NodeId: "n1", State: succeeded, AssignmentId: "r-7-n1-e5-1", Gateway: "gw"})
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Add(30 * time.Hour) // the first four entries expired, not the fifth
	if n, err := l.Sweep(ctx); err != nil || n != 4 {
		t.Fatalf("Sweep = %d, %v; want 4 deleted", n, err)
	}
	want = map[string]int64{audit.NodeResultMarkerKey("r-7", "n1", succeeded, "r-7-n1-e5-1"): entries[3].GetSequence() + 1}
	if diff := cmp.Diff(want, readMarkers(t, s, "r-7")); diff != "" {
		t.Errorf("markers after the sweep (-want +got):\n%s", diff)
	}
}

// entryRevision returns the revision at which the entry with sequence seq
// was written.
func entryRevision(t *testing.T, s *store.Store, seq int64) int64 {
	t.Helper()
	resp, err := s.Client().Get(ctxT(t), store.AuditPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if strings.HasSuffix(string(kv.Key), fmt.Sprintf("-%010d", seq)) {
			return kv.ModRevision
		}
	}
	t.Fatalf("no entry with sequence %d", seq)
	return 0
}

// TestReconcile simulates leaders that died after making results durable
// and before writing their entries: the node records are in etcd, the
// entries are not.
func TestReconcile(t *testing.T) {
	s := storetest.Open(t)
	l := openLog(t, s, audit.Config{ReplicaName: "cp-2", BatchDelay: time.Millisecond})
	ctx := ctxT(t)
	now := time.Now()
	putRollout := func(id string, st outpostv1.RolloutState, updated time.Time) {
		t.Helper()
		r := &outpostv1.Rollout{Id: id, App: "billing", State: st, UpdateTime: timestamppb.New(updated), TraceId: "0af7651916cd43dd8448eb211c80319c"}
		if err := s.Put(ctx, store.RolloutKey(id), r); err != nil {
			t.Fatal(err)
		}
	}
	putNode := func(rid, nid string, st outpostv1.NodeState, aid string) {
		t.Helper()
		n := &outpostv1.RolloutNode{RolloutId: rid, NodeId: nid, State: st, AssignmentId: aid, Gateway: "gw-1", Step: outpostv1.Step_STEP_UNLOCK}
		if st == nodeFailed {
			n.Step, n.Error = outpostv1.Step_STEP_HEALTH, "GET /health: 503"
		}
		if err := s.Put(ctx, store.RolloutNodeKey(rid, nid), n); err != nil {
			t.Fatal(err)
		}
	}
	// A running rollout: three results lost, one recorded, two nodes not
	// done.
	putRollout("r-1", outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, now.Add(-72*time.Hour))
	putNode("r-1", "a", succeeded, "r-1-a-e3-1")
	putNode("r-1", "b", nodeFailed, "r-1-b-e3-2")
	putNode("r-1", "c", rolledBack, "r-1-c-e3-9")
	putNode("r-1", "d", succeeded, "r-1-d-e3-4")
	putNode("r-1", "e", nodeRun, "r-1-e-e3-5")
	putNode("r-1", "f", nodePend, "")
	l.RecordRolloutNode(ctx, "r-1", &outpostv1.RolloutNode{NodeId: "d", State: succeeded, AssignmentId: "r-1-d-e3-4", Gateway: "gw-1"})
	// A rollout that ended an hour ago: its end and a skipped node lost.
	putRollout("r-2", outpostv1.RolloutState_ROLLOUT_STATE_ABORTED, now.Add(-time.Hour))
	putNode("r-2", "a", skipped, "")
	// A rollout that ended long ago is not looked at.
	putRollout("r-3", outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED, now.Add(-72*time.Hour))
	putNode("r-3", "a", succeeded, "r-3-a-e1-1")
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	rev, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Written after the term started: the new engine's, left to its hooks.
	putNode("r-1", "e", succeeded, "r-1-e-e3-5")

	n, err := l.Reconcile(ctx, rev, now.Add(-audit.DefaultReconcileWindow))
	if err != nil || n != 5 {
		t.Fatalf("Reconcile = %d, %v; want 5 recorded", n, err)
	}
	var got []string
	for _, e := range listAll(t, l, audit.Query{}, 100) {
		got = append(got, fmt.Sprintf("%s %s %s %s %q recovered=%s", e.GetRolloutId(), e.GetAction(), e.GetNodeId(), e.GetResult(),
			e.GetMessage(), e.GetDetails()["recovered"]))
		if e.GetDetails()["recovered"] == "true" && e.GetDetails()["trace_id"] != "0af7651916cd43dd8448eb211c80319c" {
			t.Errorf("recovered entry %q has trace_id %q, want the rollout's", e.GetMessage(), e.GetDetails()["trace_id"])
		}
	}
	want := []string{
		`r-1 node.result d OK "SUCCEEDED" recovered=`,
		`r-1 node.result a OK "SUCCEEDED" recovered=true`,
		`r-1 node.result b FAILED "FAILED: GET /health: 503" recovered=true`,
		`r-1 node.result c FAILED "ROLLED_BACK" recovered=true`,
		`r-2 node.result a OK "SKIPPED" recovered=true`,
		`r-2 rollout.state  OK "ABORTED" recovered=true`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}

	// Everything recovered has its marker now: a second pass (the next
	// leader's) adds nothing.
	if n, err := l.Reconcile(ctx, rev, now.Add(-audit.DefaultReconcileWindow)); err != nil || n != 0 {
		t.Errorf("second Reconcile = %d, %v; want 0", n, err)
	}
	if all := listAll(t, l, audit.Query{}, 100); len(all) != len(want) {
		t.Errorf("%d entries after the second Reconcile, want %d", len(all), len(want))
	}
	// At the newest revision the result written after rev is recorded too.
	if n, err := l.Reconcile(ctx, 0, now.Add(-audit.DefaultReconcileWindow)); err != nil || n != 1 {
		t.Errorf("Reconcile at the newest revision = %d, %v; want 1 (r-1/e)", n, err)
	}
}
