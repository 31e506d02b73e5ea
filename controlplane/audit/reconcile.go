package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

const (
	// DefaultReconcileWindow is how long after a rollout ended Reconcile
	// still looks at it, for callers that have no better bound.
	DefaultReconcileWindow = 24 * time.Hour
	// reconcilePage is how many rollouts one listing reads.
	reconcilePage = 100
	// nodesPage is how many node records one read returns.
	nodesPage = 500
)

// Recovered is the detail ("recovered": "true") of entries Reconcile
// writes: the result happened earlier, under a leader that died before
// its entry was written, and the entry's time is when it was recovered.
const Recovered = "recovered"

// Reconcile writes the entries a leader that died lost: the engine makes
// a node's result durable first and queues its entry after, so a leader
// killed in between leaves a result with no entry. For every rollout that
// is not terminal or was updated at or after endedSince, it reads the
// rollout's final node records and its markers (one range read) and
// records every final node without a marker, and a terminal rollout state
// without one, with detail Recovered. It waits until they are written and
// returns how many it recorded.
//
// Node records are read at etcd revision rev, the revision at which the
// caller's leadership term started: what is newer was written by this
// term's engine, whose own entries may still be queued, and must not be
// recorded twice. rev 0 reads the newest revision (every result, at the
// price of duplicates); a compacted rev falls back to it.
//
// Only each node's latest result can be recovered: a result the node
// left since (a succeeded node rolled back later) is gone from etcd.
// Entries are at least once: a deposed leader that is still alive may
// write its queued entry after Reconcile wrote the same result.
// Reconcile writes whatever replica leads or not; run it on the leader
// only, bounded by the leadership term's ctx.
func (l *Log) Reconcile(ctx context.Context, rev int64, endedSince time.Time) (int, error) {
	total := 0
	after := ""
	for range 1 << 20 {
		var rs []*outpostv1.Rollout
		next, err := l.cfg.Store.ListChildren(ctx, store.RolloutsPrefix, reconcilePage, after, func(_ string, v []byte) error {
			r := &outpostv1.Rollout{}
			if err := proto.Unmarshal(v, r); err != nil {
				return err
			}
			if !rolloutstate.Terminal(r.GetState()) || !r.GetUpdateTime().AsTime().Before(endedSince) {
				rs = append(rs, r)
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("audit: reconcile: %w", err)
		}
		for _, r := range rs {
			n, err := l.reconcileRollout(ctx, r, rev)
			total += n
			if err != nil {
				return total, fmt.Errorf("audit: reconcile rollout %s: %w", r.GetId(), err)
			}
		}
		if next == "" {
			return total, nil
		}
		after = next
	}
	return total, errors.New("audit: reconcile: too many pages of rollouts")
}

// reconcileRollout records r's results that have no marker and returns
// how many.
func (l *Log) reconcileRollout(ctx context.Context, r *outpostv1.Rollout, rev int64) (int, error) {
	id := r.GetId()
	if store.CheckID(id) != nil {
		return 0, nil // no marker can name it
	}
	nodes, err := l.finalNodes(ctx, id, rev)
	if err != nil {
		return 0, err
	}
	terminal := rolloutstate.Terminal(r.GetState())
	if len(nodes) == 0 && !terminal {
		return 0, nil
	}
	keys, err := l.cfg.Store.ListKeys(ctx, store.AuditIndexRolloutPrefix(id))
	if err != nil {
		return 0, fmt.Errorf("read markers: %w", err)
	}
	marked := make(map[string]bool, len(keys))
	for _, k := range keys {
		marked[k] = true
	}
	var missing []*outpostv1.AuditEntry
	for _, n := range nodes {
		e := l.rolloutNodeEntry(id, n)
		if k := markerKey(e); k != "" && !marked[k] {
			missing = append(missing, e)
		}
	}
	if terminal && !marked[RolloutStateMarkerKey(id, r.GetState())] {
		// Only a state that was durable when the term started: a newer one
		// is this term's engine's to record.
		ok, err := l.stateAt(ctx, id, r.GetState(), rev)
		if err != nil {
			return 0, err
		}
		if ok {
			// The state it came from is not known any more.
			missing = append(missing, l.rolloutStateEntry(r, "", r.GetState(), r.GetMessage()))
		}
	}
	if len(missing) == 0 {
		return 0, nil
	}
	for _, e := range missing {
		detail(e, Recovered, "true")
		if e.GetDetails()["trace_id"] == "" {
			// A node's entry names the node's own trace; others the rollout's.
			detail(e, "trace_id", r.GetTraceId())
		}
		if err := l.push(ctx, l.newItem(e, false)); err != nil {
			return 0, err
		}
		l.log.Info("recording a lost audit entry", "rollout", id, "node", e.GetNodeId(), "action", e.GetAction(), "message", e.GetMessage())
	}
	// Written before the next rollout is looked at, so a Reconcile that
	// stops half way leaves markers for what it recorded.
	if err := l.Flush(ctx); err != nil {
		return 0, err
	}
	return len(missing), nil
}

// finalNodes returns the rollout's node records in a final state, read at
// rev (0: the newest revision; a compacted rev falls back to it).
func (l *Log) finalNodes(ctx context.Context, rolloutID string, rev int64) ([]*outpostv1.RolloutNode, error) {
	prefix := store.RolloutNodesPrefix(rolloutID)
	var out []*outpostv1.RolloutNode
	start := prefix
	for range 1 << 20 {
		resp, err := l.cfg.Store.ReadPage(ctx, prefix, start, rev, nodesPage)
		if errors.Is(err, rpctypes.ErrCompacted) && rev > 0 {
			l.log.Warn("the revision the leadership term started at is compacted; reconciling the newest node records", "revision", rev)
			return l.finalNodes(ctx, rolloutID, 0)
		}
		if err != nil {
			return nil, fmt.Errorf("read node records: %w", err)
		}
		for _, kv := range resp.Kvs {
			n := &outpostv1.RolloutNode{}
			if err := proto.Unmarshal(kv.Value, n); err != nil {
				return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
			}
			if rolloutstate.NodeFinal(n.GetState()) {
				out = append(out, n)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		rev = resp.Revision // later pages read the same snapshot
	}
	return nil, errors.New("read node records: too many pages")
}

// stateAt reports whether the rollout was in state at revision rev (at
// the newest revision when rev is 0 or compacted).
func (l *Log) stateAt(ctx context.Context, rolloutID string, state outpostv1.RolloutState, rev int64) (bool, error) {
	if rev == 0 {
		return true, nil
	}
	r := &outpostv1.Rollout{}
	found, err := l.cfg.Store.GetAt(ctx, store.RolloutKey(rolloutID), rev, r)
	if errors.Is(err, rpctypes.ErrCompacted) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read rollout: %w", err)
	}
	return found && r.GetState() == state, nil
}
