package rollout_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane/leader"
	"github.com/outposthq/outpost/controlplane/planner"
	"github.com/outposthq/outpost/controlplane/rollout"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	"github.com/outposthq/outpost/internal/clock/clocktest"
	"github.com/outposthq/outpost/internal/plan"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The engine's tests run it alone: a real embedded etcd, writes fenced by
// a real leadership of it, time from a fake clock, and gateways connected
// in memory (memGateway) through the real session layer. Rollouts are
// written to etcd as the API server writes them. Nothing sleeps: time
// moves only by harness.advance, and "nothing happened until T" is read
// from etcd once the engine has handled the tick of T (settle).

// waitLimit bounds every wait; generous for a loaded machine.
const waitLimit = 20 * time.Second

// tick is the engine's tick interval (rollout.tickInterval).
const tick = 100 * time.Millisecond

// harness is one engine on its own etcd and fake clock.
type harness struct {
	t     *testing.T
	store *store.Store
	clk   *clocktest.Fake
	eng   *rollout.Engine
	// term is the leadership eng writes under.
	term *term
	// nodes is the inventory written by addNodes, by id.
	nodes map[string]*outpostv1.Node
	// next numbers rollouts; revs numbers revisions by app.
	next int
	revs map[string]int64
}

// term is one leadership of the harness's etcd and the engine of it.
type term struct {
	lead *leader.Leadership
	eng  *rollout.Engine
	// lost, when closed, lets the engine's Run end with
	// store.ErrNotLeader (the test took the leadership away).
	lost chan struct{}
}

// newHarness starts an engine for one leadership term of a fresh etcd;
// edit adjusts its config (nil: defaults, a heartbeat interval no test
// reaches). The engine stops when the test ends.
func newHarness(t *testing.T, edit func(*rollout.Config)) *harness {
	t.Helper()
	h := &harness{
		t: t, store: storetest.Open(t), clk: clocktest.NewFake(time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)),
		nodes: map[string]*outpostv1.Node{}, revs: map[string]int64{},
	}
	h.startTerm("cp-test", edit)
	return h
}

// startTerm campaigns as replica name on the harness's etcd (another
// term must have ended) and runs an engine for that term, which
// becomes h.eng. It stops when the test ends.
func (h *harness) startTerm(name string, edit func(*rollout.Config)) *term {
	t := h.t
	t.Helper()
	s := h.store
	// ctx bounds the leadership as well as the engine.
	ctx, cancel := context.WithCancel(context.Background())
	lead, err := leader.Campaign(ctx, leader.Config{
		Client: s.Client(), Prefix: store.LeaderPrefix, Name: name, Logger: storetest.Logger(),
	})
	if err != nil {
		cancel()
		t.Fatalf("campaign: %v", err)
	}
	cfg := rollout.Config{
		Store:             s,
		Fence:             lead,
		Epoch:             lead.Epoch(),
		ReplicaName:       name,
		Logger:            storetest.Logger(),
		Clock:             h.clk,
		HeartbeatInterval: 1000 * time.Hour,
		OrphanGrace:       30 * time.Second,
		RefuseBackoff:     time.Second,
	}
	if edit != nil {
		edit(&cfg)
	}
	eng, err := rollout.New(cfg)
	if err != nil {
		cancel()
		t.Fatalf("rollout.New: %v", err)
	}
	tm := &term{lead: lead, eng: eng, lost: make(chan struct{})}
	ran := make(chan error, 1)
	go func() { ran <- eng.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ran:
			lost := false
			select {
			case <-tm.lost:
				lost = true
			default:
			}
			if err != nil && !(lost && errors.Is(err, store.ErrNotLeader)) {
				t.Errorf("engine %s Run = %v", name, err)
			}
		case <-time.After(waitLimit):
			t.Errorf("engine %s did not stop within %v", name, waitLimit)
		}
		rctx, rcancel := context.WithTimeout(context.Background(), waitLimit)
		defer rcancel()
		lead.Resign(rctx) //nolint:errcheck // ctx ended the leadership already
	})
	h.eng, h.term = eng, tm
	// The engine is running once it answers on its loop.
	h.settle()
	return tm
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	h.t.Cleanup(cancel)
	return ctx
}

// settle returns once the engine has applied what was queued on its loop
// before and written what that changed (Engine.Settle, export_test.go).
// Whatever the engine decided before is then in etcd: a node is written
// RUNNING before its assignment is sent.
func (h *harness) settle() {
	h.t.Helper()
	if err := h.eng.Settle(h.ctx()); err != nil {
		h.t.Fatalf("engine loop: %v", err)
	}
}

// advance moves the clock by d and returns once the engine has handled
// the tick that fired (one tick, however long d: a ticker drops what its
// receiver missed) and everything that tick decided.
func (h *harness) advance(d time.Duration) {
	h.t.Helper()
	h.clk.Advance(d)
	waitFor(h.t, "the engine to take its tick", func() bool { return h.clk.Unreceived() == 0 })
	h.settle()
}

// waitFor polls cond until it holds, for at most waitLimit.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", waitLimit, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// nodeID names test node i; ids sort in numeric order.
func nodeID(i int) string { return fmt.Sprintf("srv-%04d", i) }

// addNodes writes n nodes of app billing-api to the inventory, all in dc.
func (h *harness) addNodes(n int, dc string) {
	h.t.Helper()
	for i := range n {
		node := &outpostv1.Node{
			Id: nodeID(i), Address: fmt.Sprintf("127.0.10.%d:22", 1+i), Datacenter: dc, User: "deploy",
			Labels: map[string]string{"app": "billing-api"},
		}
		if err := h.store.Put(h.ctx(), store.NodeKey(node.GetId()), node); err != nil {
			h.t.Fatal(err)
		}
		h.nodes[node.GetId()] = node
	}
}

// rollingPlan is a rolling plan over every node of billing-api.
func rollingPlan(batch string, maxFail int32) *outpostv1.PlanSpec {
	return &outpostv1.PlanSpec{
		App:      "billing-api",
		Artifact: &outpostv1.PlanArtifact{Path: "./build/billing-api.tar.gz"},
		Targets:  &outpostv1.PlanTargets{Selector: map[string]string{"app": "billing-api"}},
		Deploy:   &outpostv1.PlanDeploy{Path: "app"},
		Health:   &outpostv1.PlanHealth{Http: &outpostv1.HttpHealthCheck{Port: 18080, Path: "/health"}},
		Strategy: &outpostv1.PlanStrategy{Type: "rolling", Batch: batch, MaxFailPercent: &maxFail},
	}
}

// create writes a rollout of spec over every node of the inventory as
// the API server does (node records, then the rollout with its revision),
// in state (APPROVED or PENDING_APPROVAL), and returns its id.
func (h *harness) create(spec *outpostv1.PlanSpec, state outpostv1.RolloutState) string {
	h.t.Helper()
	var nodes []*outpostv1.Node
	for _, n := range h.nodes {
		nodes = append(nodes, n)
	}
	exp, err := planner.Expand(spec, nodes, planner.Options{})
	if err != nil {
		h.t.Fatalf("expand: %v", err)
	}
	deploy, err := plan.DeploySpecOf(spec, 1)
	if err != nil {
		h.t.Fatalf("deploy spec: %v", err)
	}
	h.next++
	h.revs[spec.GetApp()]++
	id := fmt.Sprintf("r-%08d", h.next)
	now := timestamppb.New(h.clk.Now())
	r := &outpostv1.Rollout{
		Id:           id,
		App:          spec.GetApp(),
		Revision:     h.revs[spec.GetApp()],
		ReleaseId:    fmt.Sprintf("r%d-test", h.revs[spec.GetApp()]),
		Plan:         spec,
		Artifact:     &outpostv1.Artifact{Name: "billing-api.tar.gz", Sha256: "00", Size: 1},
		State:        state,
		Stages:       exp.Stages,
		CreateTime:   now,
		UpdateTime:   now,
		CurrentStage: -1,
		Deploy:       deploy,
		Requester:    "alice",
	}
	var ops []clientv3.Op
	for _, rn := range exp.Nodes {
		rn.RolloutId = id
		op, err := store.OpPut(store.RolloutNodeKey(id, rn.GetNodeId()), rn)
		if err != nil {
			h.t.Fatal(err)
		}
		ops = append(ops, op)
	}
	if err := h.store.Txn(h.ctx(), nil, ops...); err != nil {
		h.t.Fatal(err)
	}
	rev, err := store.OpPut(store.RevisionKey(r.GetApp(), r.GetRevision()), rollout.RevisionOf(r))
	if err != nil {
		h.t.Fatal(err)
	}
	rop, err := store.OpPut(store.RolloutKey(id), r)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.store.Txn(h.ctx(), nil, rev, rop); err != nil {
		h.t.Fatal(err)
	}
	return id
}

// rollout reads rollout id from etcd.
func (h *harness) rollout(id string) *outpostv1.Rollout {
	h.t.Helper()
	r := &outpostv1.Rollout{}
	if found, _, err := h.store.Get(h.ctx(), store.RolloutKey(id), r); err != nil || !found {
		h.t.Fatalf("rollout %s: found %v, %v", id, found, err)
	}
	return r
}

// node reads the record of node nodeID in rollout id from etcd.
func (h *harness) node(id, nodeID string) *outpostv1.RolloutNode {
	h.t.Helper()
	n := &outpostv1.RolloutNode{}
	if found, _, err := h.store.Get(h.ctx(), store.RolloutNodeKey(id, nodeID), n); err != nil || !found {
		h.t.Fatalf("node %s of %s: found %v, %v", nodeID, id, found, err)
	}
	return n
}

// waitRollout waits until ok accepts rollout id as written in etcd.
func (h *harness) waitRollout(id, what string, ok func(*outpostv1.Rollout) bool) *outpostv1.Rollout {
	h.t.Helper()
	var last *outpostv1.Rollout
	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		if last = h.rollout(id); ok(last) {
			return last
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.t.Fatalf("rollout %s: waited for %s; last state %v, message %q, counts %v", id, what, last.GetState(), last.GetMessage(), last.GetNodeCounts())
	return nil
}

func stateIs(s outpostv1.RolloutState) func(*outpostv1.Rollout) bool {
	return func(r *outpostv1.Rollout) bool { return r.GetState() == s }
}
