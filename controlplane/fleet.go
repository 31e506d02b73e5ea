package controlplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/plan"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Fleet truth: each node's desired release (store.NodeDesiredKey: the
// release Outpost last activated there, written by the rollout engine with
// the node's result) beside its NodeStatus (store.NodeStatusKey): the last
// observation a gateway made of it (VerifyNodes, over the host key scan
// stream), the drift between the two (driftOf) and the desired release
// it was compared with. The first sighting of a drift writes a node.drift audit
// entry; the same drift seen again does not.

// verifyConcurrency bounds the observations in flight per datacenter,
// matching the gateway's own bound, so a verification never queues more
// on a gateway's stream than it runs.
const verifyConcurrency = 4

// verifyTimeout bounds one node's observation as the control plane waits
// for it (the gateway bounds its SSH work to 30 s).
const verifyTimeout = 45 * time.Second

// updateNodeStatus applies f to node id's status in a compare-and-swap
// loop (the engine and verifications write it from any replica).
func (s *Server) updateNodeStatus(ctx context.Context, id string, f func(*outpostv1.NodeStatus)) (*outpostv1.NodeStatus, error) {
	key := store.NodeStatusKey(id)
	for range 5 {
		st := &outpostv1.NodeStatus{}
		found, rev, err := s.store.Get(ctx, key, st)
		if err != nil {
			return nil, err
		}
		f(st)
		op, err := store.OpPut(key, st)
		if err != nil {
			return nil, err
		}
		cmp := clientv3.Compare(clientv3.ModRevision(key), "=", rev)
		if !found {
			cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		}
		err = s.store.TxnIf(ctx, nil, []clientv3.Cmp{cmp}, op)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		return st, err
	}
	return nil, fmt.Errorf("node %s status: too many concurrent updates", id)
}

// nodeStatuses reads the fleet truth of nodes ids: each NodeStatus with
// desired set from the engine's record (store.NodeDesiredKey); a node
// without one keeps the desired of its status (written there by versions
// before the engine recorded it). Nodes with neither are absent.
func (s *Server) nodeStatuses(ctx context.Context, ids []string) (map[string]*outpostv1.NodeStatus, error) {
	keys := make([]string, 0, 2*len(ids))
	for _, id := range ids {
		keys = append(keys, store.NodeStatusKey(id), store.NodeDesiredKey(id))
	}
	out := map[string]*outpostv1.NodeStatus{}
	desired := map[string]*outpostv1.NodeDesired{}
	if err := s.store.GetAll(ctx, keys, func(key string, v []byte) error {
		if id, ok := strings.CutPrefix(key, store.NodeDesiredPrefix); ok {
			d := &outpostv1.NodeDesired{}
			desired[id] = d
			return proto.Unmarshal(v, d)
		}
		st := &outpostv1.NodeStatus{}
		out[key[len(store.NodeStatusPrefix):]] = st
		return proto.Unmarshal(v, st)
	}); err != nil {
		return nil, err
	}
	for id, d := range desired {
		st := out[id]
		if st == nil {
			st = &outpostv1.NodeStatus{}
			out[id] = st
		}
		supersede(st, d)
		st.Desired = d
	}
	return out, nil
}

// supersede clears st's drift when it was found against another desired
// release than d: a deployment since the observation changed what the
// node should run (a repair rollout, say), so the old drift no longer
// says anything until the next observation compares the node with d.
func supersede(st *outpostv1.NodeStatus, d *outpostv1.NodeDesired) {
	was := st.GetDesired()
	if was == nil || d == nil {
		return
	}
	if was.GetRolloutId() != d.GetRolloutId() || was.GetRelease() != d.GetRelease() {
		st.Drift, st.DriftSince = nil, nil
	}
}

// resolveDesired fills in d's app, path, layout and (for the rollout's own
// release) digest from the rollout that activated it.
func (s *Server) resolveDesired(ctx context.Context, d *outpostv1.NodeDesired, cache map[string]*outpostv1.Rollout) error {
	if d.GetPath() != "" {
		return nil
	}
	r, ok := cache[d.GetRolloutId()]
	if !ok {
		r = &outpostv1.Rollout{}
		found, _, err := s.store.Get(ctx, store.RolloutKey(d.GetRolloutId()), r)
		if err != nil {
			return err
		}
		if !found {
			r = nil
		}
		cache[d.GetRolloutId()] = r
	}
	if r == nil {
		return fmt.Errorf("rollout %s that activated release %s is gone", d.GetRolloutId(), d.GetRelease())
	}
	d.App, d.Path, d.Layout = r.GetApp(), r.GetDeploy().GetPath(), r.GetDeploy().GetLayout()
	if r.GetReleaseId() == d.GetRelease() {
		d.Sha256 = r.GetArtifact().GetSha256()
	}
	return nil
}

// driftOf lists how observation o differs from desired d. busy reports
// whether the lock's rollout still runs (then a held lock is no drift).
func driftOf(d *outpostv1.NodeDesired, o *outpostv1.NodeObservation, busy func(rollout string) bool) []outpostv1.DriftKind {
	var out []outpostv1.DriftKind
	if o.GetResult() != outpostv1.ObserveResult_OBSERVE_RESULT_OK {
		return []outpostv1.DriftKind{outpostv1.DriftKind_DRIFT_KIND_UNREACHABLE}
	}
	switch {
	case o.GetRelease() != "" && o.GetRelease() != d.GetRelease():
		out = append(out, outpostv1.DriftKind_DRIFT_KIND_RELEASE_SWITCHED)
	case o.GetRelease() == "" && o.GetCurrentOther() != "":
		out = append(out, outpostv1.DriftKind_DRIFT_KIND_RELEASE_SWITCHED)
	}
	if !o.GetReleasePresent() || o.GetRelease() == "" && o.GetCurrentOther() == "" {
		out = append(out, outpostv1.DriftKind_DRIFT_KIND_RELEASE_MISSING)
	} else if d.GetLayout() != outpostv1.Layout_LAYOUT_INPLACE {
		switch {
		case o.GetSha256() == "":
			out = append(out, outpostv1.DriftKind_DRIFT_KIND_DIGEST_MISSING)
		case d.GetSha256() != "" && o.GetSha256() != d.GetSha256():
			out = append(out, outpostv1.DriftKind_DRIFT_KIND_DIGEST_CHANGED)
		}
	}
	if o.GetLockHeld() && !o.GetLockActive() && !busy(o.GetLockRollout()) {
		out = append(out, outpostv1.DriftKind_DRIFT_KIND_STALE_LOCK)
	}
	return slices.Compact(out)
}

// verifyTarget is one node to verify, or why it is skipped.
type verifyTarget struct {
	node    *outpostv1.Node
	status  *outpostv1.NodeStatus
	skipped string
}

// verifyPlan selects the nodes of req and says which are skipped; busy
// reports whether a rollout runs (non-terminal).
func (s *Server) verifyPlan(ctx context.Context, selector, datacenter string) ([]verifyTarget, func(string) bool, error) {
	sel, err := plan.ParseLabelSelector(selector)
	if err != nil {
		return nil, nil, fieldError("label_selector", "%v", err)
	}
	nodes, err := s.allNodes(ctx)
	if err != nil {
		return nil, nil, internal(err)
	}
	running, busyNodes, err := s.runningRollouts(ctx)
	if err != nil {
		return nil, nil, internal(err)
	}
	var out []verifyTarget
	var ids []string
	for _, n := range nodes {
		if (datacenter == "" || n.GetDatacenter() == datacenter) && plan.MatchSelector(sel, n.GetLabels()) {
			out = append(out, verifyTarget{node: n})
			ids = append(ids, n.GetId())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].node.GetId() < out[j].node.GetId() })
	statuses, err := s.nodeStatuses(ctx, ids)
	if err != nil {
		return nil, nil, internal(err)
	}
	for i := range out {
		t := &out[i]
		t.status = statuses[t.node.GetId()]
		switch {
		case t.status.GetDesired().GetRelease() == "":
			t.skipped = "never deployed by Outpost"
		case busyNodes[t.node.GetId()] != "":
			t.skipped = "in running rollout " + busyNodes[t.node.GetId()]
		}
	}
	return out, func(id string) bool { return running[id] }, nil
}

// runningRollouts lists the rollouts not yet terminal and the nodes they
// hold (node id to rollout id).
func (s *Server) runningRollouts(ctx context.Context) (map[string]bool, map[string]string, error) {
	running := map[string]bool{}
	after := ""
	for range maxScanPages {
		next, err := s.store.ListChildren(ctx, store.RolloutsPrefix, 500, after, func(_ string, v []byte) error {
			r := &outpostv1.Rollout{}
			if err := proto.Unmarshal(v, r); err != nil {
				return err
			}
			if !rolloutstate.Terminal(r.GetState()) {
				running[r.GetId()] = true
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
		if next == "" {
			break
		}
		after = next
	}
	nodes := map[string]string{}
	for id := range running {
		keys, err := s.store.ListKeys(ctx, store.RolloutNodesPrefix(id))
		if err != nil {
			return nil, nil, err
		}
		for _, k := range keys {
			nodes[k[len(store.RolloutNodesPrefix(id)):]] = id
		}
	}
	return running, nodes, nil
}

// verifyNode observes one node through a gateway of its datacenter and
// stores the observation and drift; it writes the audit entry when a
// drift is new.
func (s *Server) verifyNode(ctx context.Context, t verifyTarget, busy func(string) bool, cache map[string]*outpostv1.Rollout, cacheMu *sync.Mutex) (*outpostv1.NodeStatus, error) {
	d := proto.CloneOf(t.status.GetDesired())
	cacheMu.Lock()
	err := s.resolveDesired(ctx, d, cache)
	cacheMu.Unlock()
	var o *outpostv1.NodeObservation
	if err != nil {
		o = &outpostv1.NodeObservation{Result: outpostv1.ObserveResult_OBSERVE_RESULT_FAILED, Error: err.Error()}
	} else {
		o = s.observe(ctx, t.node, d)
	}
	if o.GetTime() == nil {
		o.Time = timestamppb.New(s.cfg.Clock.Now())
	}
	var fresh []outpostv1.DriftKind
	st, err := s.updateNodeStatus(ctx, t.node.GetId(), func(st *outpostv1.NodeStatus) {
		st.Desired = d // what the observation is compared with
		drift := driftOf(d, o, busy)
		fresh = fresh[:0]
		for _, k := range drift {
			if !slices.Contains(st.GetDrift(), k) {
				fresh = append(fresh, k)
			}
		}
		switch {
		case len(drift) == 0:
			st.DriftSince = nil
		case len(st.GetDrift()) == 0:
			st.DriftSince = o.GetTime()
		}
		st.Observation, st.Drift = o, drift
	})
	if err != nil {
		return nil, err
	}
	if len(fresh) > 0 {
		s.audit.RecordNodeDrift(ctx, t.node.GetId(), fresh, st)
	}
	return st, nil
}

// observe asks a gateway of n's datacenter to observe n.
func (s *Server) observe(ctx context.Context, n *outpostv1.Node, d *outpostv1.NodeDesired) *outpostv1.NodeObservation {
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	res, gw, err := s.scans.request(ctx, &outpostv1.ServeHostKeyScansResponse{
		Node:    n,
		Observe: &outpostv1.ObserveRequest{Path: d.GetPath(), Layout: d.GetLayout(), Release: d.GetRelease()},
	})
	switch {
	case errors.Is(err, errNoScanGateway):
		return &outpostv1.NodeObservation{Result: outpostv1.ObserveResult_OBSERVE_RESULT_NO_GATEWAY, Error: "no gateway of datacenter " + n.GetDatacenter() + " is connected"}
	case err != nil:
		return &outpostv1.NodeObservation{Result: outpostv1.ObserveResult_OBSERVE_RESULT_FAILED, Error: err.Error(), Gateway: gw}
	case res.GetObservation() == nil:
		return &outpostv1.NodeObservation{Result: outpostv1.ObserveResult_OBSERVE_RESULT_FAILED, Error: "gateway " + gw + " does not observe nodes (too old?)", Gateway: gw}
	}
	return res.GetObservation()
}

// VerifyNodes observes the selected nodes and streams each as it is done.
func (c *controlPlaneService) VerifyNodes(req *outpostv1.VerifyNodesRequest, stream grpc.ServerStreamingServer[outpostv1.VerifyNodesResponse]) error {
	ctx := stream.Context()
	release, err := c.s.verifies.enter(callerSubject(ctx))
	if err != nil {
		return err
	}
	defer release()
	targets, busy, err := c.s.verifyPlan(ctx, req.GetLabelSelector(), req.GetDatacenter())
	if err != nil {
		return err
	}
	total := int32(len(targets))
	var (
		sendMu  sync.Mutex
		done    int32
		sendErr error
		cacheMu sync.Mutex
		wg      sync.WaitGroup
	)
	cache := map[string]*outpostv1.Rollout{}
	send := func(n *outpostv1.Node, st *outpostv1.NodeStatus, skipped string) {
		sendMu.Lock()
		defer sendMu.Unlock()
		done++
		n = proto.CloneOf(n)
		n.Status = st
		if sendErr == nil {
			sendErr = stream.Send(&outpostv1.VerifyNodesResponse{Node: n, Skipped: skipped, Done: done, Total: total})
		}
	}
	slots := map[string]chan struct{}{}
	for _, t := range targets {
		if t.skipped != "" {
			send(t.node, t.status, t.skipped)
			continue
		}
		dc := t.node.GetDatacenter()
		if slots[dc] == nil {
			slots[dc] = make(chan struct{}, verifyConcurrency)
		}
		slot := slots[dc]
		select {
		case slot <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slot }()
			st, err := c.s.inFlight.do(ctx, t.node.GetId(), func() (*outpostv1.NodeStatus, error) {
				return c.s.verifyNode(ctx, t, busy, cache, &cacheMu)
			})
			if err != nil {
				c.s.log.Warn("node verification not stored", "node", t.node.GetId(), "error", err)
				send(t.node, t.status, "not stored: "+err.Error())
				return
			}
			send(t.node, st, "")
		}()
	}
	wg.Wait()
	return sendErr
}

// withStatus sets Node.status on each node from etcd.
func (s *Server) withStatus(ctx context.Context, nodes []*outpostv1.Node) error {
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.GetId()
	}
	statuses, err := s.nodeStatuses(ctx, ids)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if st := statuses[n.GetId()]; st != nil {
			n.Status = st
		}
	}
	return nil
}

// withStatus is resp with each node's status.
func (c *controlPlaneService) withStatus(ctx context.Context, resp *outpostv1.ListNodesResponse) (*outpostv1.ListNodesResponse, error) {
	if err := c.s.withStatus(ctx, resp.GetNodes()); err != nil {
		return nil, internal(err)
	}
	return resp, nil
}
