package rollout

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/controlplane/store"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Desired releases: the release Outpost last activated on a node
// (store.NodeDesiredKey) is what fleet truth compares a node with. It is
// written in the same fenced transaction as the node record whose result
// changed it, never after: a leader lost between the two would leave
// every node of the rollout looking switched by hand.

// activation is the release n's record says Outpost left current on the
// node, or "" when the record says nothing about it: a succeeded
// deployment's release; the previous release of a node rolled back (or
// whose ordered rollback failed: Outpost meant it to be current). A
// failure before the switch leaves the node as it was, and a traffic
// switch node activates nothing.
func (n *nodeRun) activation() string {
	if n.isSwitch() {
		return ""
	}
	switch n.rn.GetState() {
	case outpostv1.NodeState_NODE_STATE_SUCCEEDED:
		if !n.rn.GetRollingBack() {
			return n.rn.GetRelease()
		}
	case outpostv1.NodeState_NODE_STATE_ROLLED_BACK:
		return n.rn.GetPreviousRelease()
	case outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED:
		if n.rn.GetRollingBack() {
			return n.rn.GetPreviousRelease()
		}
	}
	return ""
}

// activated reports whether n's record names an activation not yet
// recorded as the node's desired release.
func (n *nodeRun) activated() bool {
	a := n.activation()
	return a != "" && a != n.desired
}

// desiredOf is the NodeDesired record of n's activation.
func (n *nodeRun) desiredOf(now *timestamppb.Timestamp) *outpostv1.NodeDesired {
	r := n.run.r
	d := &outpostv1.NodeDesired{
		Release:   n.activation(),
		RolloutId: r.GetId(),
		App:       r.GetApp(),
		Path:      r.GetDeploy().GetPath(),
		Layout:    r.GetDeploy().GetLayout(),
		Time:      now,
	}
	if d.GetRelease() == r.GetReleaseId() {
		d.Sha256 = r.GetArtifact().GetSha256()
	}
	return d
}

// writeActivations writes the records of ns, nodes whose result changed
// their desired release, each in one fenced transaction with its desired
// release. A node not written is marked dirty again for the next commit.
func (e *Engine) writeActivations(ctx context.Context, ns []*nodeRun) error {
	now := timestamppb.New(e.cfg.Clock.Now())
	// Two puts per node; store.Txn would cut a longer list anywhere.
	const perTxn = store.MaxTxnOps / 2
	for len(ns) > 0 {
		chunk := ns[:min(len(ns), perTxn)]
		ops := make([]clientv3.Op, 0, 2*len(chunk))
		for _, n := range chunk {
			rec, err := store.OpPut(store.RolloutNodeKey(n.run.id(), n.id()), n.rn)
			if err != nil {
				return e.redo(ns, err)
			}
			des, err := store.OpPut(store.NodeDesiredKey(n.id()), n.desiredOf(now))
			if err != nil {
				return e.redo(ns, err)
			}
			ops = append(ops, rec, des)
		}
		if err := e.cfg.Store.Txn(ctx, e.cfg.Fence, ops...); err != nil {
			return e.redo(ns, err)
		}
		for _, n := range chunk {
			n.desired = n.activation()
		}
		ns = ns[len(chunk):]
	}
	return nil
}

// redo marks ns dirty again and returns err.
func (e *Engine) redo(ns []*nodeRun, err error) error {
	for _, n := range ns {
		e.dirtyNodes[n] = struct{}{}
	}
	return err
}
