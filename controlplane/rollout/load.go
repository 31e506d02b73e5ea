package rollout

import (
	"context"
	"fmt"
	"sort"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// loadAll loads every active rollout not yet known.
func (e *Engine) loadAll(ctx context.Context) error {
	var found []*outpostv1.Rollout
	after := ""
	for range 1 << 20 {
		next, err := e.cfg.Store.ListChildren(ctx, store.RolloutsPrefix, 0, after, func(_ string, v []byte) error {
			r := &outpostv1.Rollout{}
			if err := proto.Unmarshal(v, r); err != nil {
				return err
			}
			if rolloutstate.Active(r.GetState()) && e.runs[r.GetId()] == nil {
				found = append(found, r)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("rollout: list rollouts: %w", err)
		}
		if next == "" {
			break
		}
		after = next
	}
	if len(found) == 0 {
		return nil
	}
	inv, err := e.inventory(ctx)
	if err != nil {
		return err
	}
	for _, r := range found {
		rr, err := e.build(ctx, r, inv)
		if err != nil {
			return err
		}
		e.adopt(rr)
	}
	return nil
}

// loadOne reads one rollout and its nodes without registering it.
func (e *Engine) loadOne(ctx context.Context, id string) (*run, error) {
	r := &outpostv1.Rollout{}
	found, _, err := e.cfg.Store.Get(ctx, store.RolloutKey(id), r)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNotFound
	}
	inv, err := e.inventory(ctx)
	if err != nil {
		return nil, err
	}
	return e.build(ctx, r, inv)
}

// onRevisionEvent starts rollouts created (on any replica) after the
// engine loaded: each is created together with its revision record.
func (e *Engine) onRevisionEvent(ctx context.Context, ev *clientv3.Event) {
	if !ev.IsCreate() {
		return
	}
	rev := &outpostv1.Revision{}
	if err := proto.Unmarshal(ev.Kv.Value, rev); err != nil {
		e.log.Warn("undecodable revision record", "key", string(ev.Kv.Key), "err", err)
		return
	}
	id := rev.GetRolloutId()
	if id == "" || e.runs[id] != nil || !rolloutstate.Active(rev.GetState()) {
		return
	}
	rr, err := e.loadOne(ctx, id)
	if err != nil {
		e.log.Warn("loading a new rollout failed", "rollout", id, "err", err)
		return
	}
	if rolloutstate.Active(rr.r.GetState()) {
		e.adopt(rr)
	}
}

// inventory reads every node; rollouts need addresses, users and host keys.
func (e *Engine) inventory(ctx context.Context) (map[string]*outpostv1.Node, error) {
	inv := map[string]*outpostv1.Node{}
	after := ""
	for range 1 << 20 {
		next, err := e.cfg.Store.List(ctx, store.NodesPrefix, 0, after, func(_ string, v []byte) error {
			n := &outpostv1.Node{}
			if err := proto.Unmarshal(v, n); err != nil {
				return err
			}
			inv[n.GetId()] = n
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("rollout: list nodes: %w", err)
		}
		if next == "" {
			break
		}
		after = next
	}
	return inv, nil
}

// build reads a rollout's node records and links them to its stages.
func (e *Engine) build(ctx context.Context, r *outpostv1.Rollout, inv map[string]*outpostv1.Node) (*run, error) {
	recs := map[string]*outpostv1.RolloutNode{}
	after := ""
	for range 1 << 20 {
		next, err := e.cfg.Store.List(ctx, store.RolloutNodesPrefix(r.GetId()), 0, after, func(_ string, v []byte) error {
			n := &outpostv1.RolloutNode{}
			if err := proto.Unmarshal(v, n); err != nil {
				return err
			}
			recs[n.GetNodeId()] = n
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("rollout: list nodes of %s: %w", r.GetId(), err)
		}
		if next == "" {
			break
		}
		after = next
	}
	upgradeMessageKind(r)
	// The revision record was written with the rollout's state.
	rr := &run{r: r, nodes: map[string]*nodeRun{}, revState: r.GetState()}
	for si, st := range r.GetStages() {
		rr.batches = append(rr.batches, nil)
		rr.stageNodes = append(rr.stageNodes, nil)
		for bi, b := range st.GetBatches() {
			var ns []*nodeRun
			for _, id := range b.GetNodeIds() {
				rec := recs[id]
				if rec == nil {
					// Not written (a create interrupted half-way): it never ran.
					rec = &outpostv1.RolloutNode{
						RolloutId: r.GetId(), NodeId: id, Stage: st.GetName(), Batch: int32(bi),
						State: outpostv1.NodeState_NODE_STATE_PENDING, Datacenter: inv[id].GetDatacenter(),
					}
				}
				n := &nodeRun{run: rr, rn: rec, node: inv[id], stage: si, batch: bi, notified: rec.GetState()}
				n.desired = n.activation()
				rr.nodes[id] = n
				rr.order = append(rr.order, n)
				ns = append(ns, n)
				rr.stageNodes[si] = append(rr.stageNodes[si], n)
			}
			rr.batches[si] = append(rr.batches[si], ns)
		}
	}
	sort.Slice(rr.order, func(i, j int) bool { return rr.order[i].id() < rr.order[j].id() })
	return rr, nil
}

// adopt registers a loaded rollout: running nodes become orphans that wait
// for their gateway to report them (or for the grace to pass).
func (e *Engine) adopt(r *run) {
	e.runs[r.id()] = r
	now := e.cfg.Clock.Now()
	running := 0
	for _, n := range r.order {
		if n.rn.GetState() != outpostv1.NodeState_NODE_STATE_RUNNING {
			continue
		}
		running++
		if aid := n.rn.GetAssignmentId(); aid != "" {
			e.assignments[aid] = n
		}
		n.orphanDeadline = now.Add(e.cfg.OrphanGrace)
		e.orphans[n] = struct{}{}
	}
	if r.r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_RUNNING {
		e.startSpans(r, true)
		for _, n := range r.order {
			if n.rn.GetState() == outpostv1.NodeState_NODE_STATE_RUNNING {
				n.span = e.startNodeSpan(r, n, true)
			}
		}
	}
	e.log.Info("rollout loaded", "rollout", r.id(), "app", r.r.GetApp(), "state", rolloutstate.Name(r.r.GetState()),
		"nodes", len(r.order), "running", running)
}
