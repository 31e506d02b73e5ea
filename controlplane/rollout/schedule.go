package rollout

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// dispatch assigns the pending nodes of every running batch to gateways
// of their datacenters, within gateway capacity, the stage's max_parallel
// per gateway and Config.MaxPerDatacenter; and, in rollouts that are
// stopping, the nodes waiting to be rolled back.
func (e *Engine) dispatch() {
	now := e.cfg.Clock.Now()
	ids := make([]string, 0, len(e.runs))
	for id, r := range e.runs {
		if r.r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_RUNNING {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	full := map[string]bool{}   // datacenters with no free gateway now
	absent := map[string]bool{} // datacenters with no gateway at all
	waiting := map[string]int{} // nodes waiting by datacenter with no gateway
	running := map[string]int{} // assignments running by datacenter, for MaxPerDatacenter
	for _, s := range e.gateways {
		running[s.dc] += len(s.active)
	}
	dcLimit := e.cfg.MaxPerDatacenter
	for _, id := range ids {
		r := e.runs[id]
		var candidates []*nodeRun
		mp := 0
		perGateway := map[string]int{}
		if r.aborting() {
			for _, n := range r.order {
				if n.rn.GetRollingBack() && n.rn.GetState() == outpostv1.NodeState_NODE_STATE_PENDING {
					candidates = append(candidates, n)
				}
			}
		} else {
			cur := int(r.r.GetCurrentStage())
			st := r.r.GetStages()[cur]
			b := int(st.GetCurrentBatch())
			if st.GetState() != outpostv1.StageState_STAGE_STATE_RUNNING || b < 0 || b >= len(r.batches[cur]) {
				continue
			}
			candidates = r.batches[cur][b]
			mp = int(st.GetMaxParallel())
			for _, n := range candidates {
				if n.rn.GetState() == outpostv1.NodeState_NODE_STATE_RUNNING {
					perGateway[n.rn.GetGateway()]++
				}
			}
		}
		atLimit := func(s *session) bool { return mp > 0 && perGateway[s.name] >= mp }
		waitDCs := map[string]bool{}
		rollingBack := r.aborting()
		for _, n := range candidates {
			if r.aborting() != rollingBack {
				break // a failure below crossed the budget
			}
			if n.rn.GetState() != outpostv1.NodeState_NODE_STATE_PENDING {
				continue
			}
			dc := n.rn.GetDatacenter()
			if n.node == nil {
				e.failNode(n, "node "+n.id()+" is no longer in the inventory")
				continue
			}
			if now := n.node.GetDatacenter(); now != dc {
				e.failNode(n, fmt.Sprintf("node %s moved from datacenter %s to %s after the rollout was created", n.id(), dc, now))
				continue
			}
			var s *session
			if dcLimit > 0 && running[dc] >= dcLimit {
				continue // the datacenter's bound: the node waits its turn
			}
			if !full[dc] {
				var connected bool
				s, connected = e.pickGateway(dc, now, atLimit)
				if s == nil && !e.anyFree(dc, now) {
					full[dc] = true
					absent[dc] = !connected
				}
			}
			if s == nil {
				if absent[dc] {
					waitDCs[dc] = true
					waiting[dc]++
					e.setNodeWaiting(n, dc)
				}
				continue
			}
			e.assign(n, s)
			perGateway[s.name]++
			running[dc]++
		}
		e.setRunWaiting(r, waitDCs)
	}
	for dc, count := range waiting {
		if now.Sub(e.waitLogged[dc]) >= e.cfg.GatewayWaitLog {
			e.waitLogged[dc] = now
			e.log.Info("waiting for a gateway", "datacenter", dc, "nodes", count)
		}
	}
}

// WaitMessage is the status of a node (RolloutNode.error while PENDING
// for a deploy) and of its rollout while no gateway of its datacenter is
// connected.
func WaitMessage(dc string) string { return "waiting for a gateway in datacenter " + dc }

// setNodeWaiting marks n as waiting for a gateway of dc. The error of a
// node waiting to be rolled back keeps the reason for the rollback (its
// result is reported after it), so only a deploy shows the wait there.
func (e *Engine) setNodeWaiting(n *nodeRun, dc string) {
	if n.rn.GetWaitingForGateway() {
		return
	}
	n.rn.WaitingForGateway = true
	if !n.rn.GetRollingBack() {
		n.rn.Error = WaitMessage(dc)
	}
	e.dirtyNodes[n] = struct{}{}
}

func (e *Engine) setRunWaiting(r *run, dcs map[string]bool) {
	msg := ""
	if len(dcs) > 0 {
		list := make([]string, 0, len(dcs))
		for dc := range dcs {
			list = append(list, dc)
		}
		sort.Strings(list)
		msg = WaitMessage(strings.Join(list, ", "))
	}
	if msg == r.waitMsg {
		return
	}
	// Do not overwrite a message that says something else.
	if r.r.GetMessage() == "" || r.r.GetMessage() == r.waitMsg {
		r.setMessage(msg)
		e.markRun(r)
	}
	r.waitMsg = msg
}

// pickGateway returns the connected gateway of dc with the most free
// capacity that skip (nil: none) does not rule out, or nil; connected
// reports whether dc has any gateway at all.
func (e *Engine) pickGateway(dc string, now time.Time, skip func(*session) bool) (best *session, connected bool) {
	bestFree := 0
	for _, s := range e.gateways {
		if s.dc != dc {
			continue
		}
		connected = true
		if now.Before(s.refusedUntil) || (skip != nil && skip(s)) {
			continue
		}
		if free := s.free(); free > bestFree || (free == bestFree && free > 0 && best != nil && s.name < best.name) {
			best, bestFree = s, free
		}
	}
	return best, connected
}

// anyFree reports whether some gateway of dc has free capacity now.
func (e *Engine) anyFree(dc string, now time.Time) bool {
	s, _ := e.pickGateway(dc, now, nil)
	return s != nil
}

// free is how many more assignments the gateway takes now.
func (s *session) free() int { return s.capacity - len(s.active) - len(s.checks) }

// assign records n as running on gateway s and queues its assignment,
// which is sent once the record is durable.
func (e *Engine) assign(n *nodeRun, s *session) {
	r := n.run
	now := e.cfg.Clock.Now()
	e.assignSeq++
	aid := fmt.Sprintf("%s-%s-e%d-%d", r.id(), n.id(), e.cfg.Epoch, e.assignSeq)
	kind := n.kind()
	n.rn.State = outpostv1.NodeState_NODE_STATE_RUNNING
	n.rn.Gateway = s.name
	n.rn.AssignmentId = aid
	n.rn.StartTime = timestamppb.New(now)
	n.rn.Step = outpostv1.Step_STEP_UNSPECIFIED
	n.rn.StepPhase = outpostv1.StepPhase_STEP_PHASE_UNSPECIFIED
	n.rn.LastEventSeq = 0
	n.rn.WaitingForGateway = false
	if kind == outpostv1.AssignmentKind_ASSIGNMENT_KIND_DEPLOY {
		n.rn.Release = r.r.GetReleaseId()
		n.rn.Error = ""
		n.rn.PreviousRelease = ""
	}
	n.sess = s
	s.active[aid] = n
	e.assignments[aid] = n
	e.markNode(n)
	n.span = e.startNodeSpan(r, n, false)
	n.span.SetAttributes(telemetry.AttrGateway.String(s.name), telemetry.AttrAssignmentID.String(aid))
	st := r.r.GetStages()[n.stage]
	msg := &outpostv1.Assignment{
		AssignmentId:   aid,
		RolloutId:      r.id(),
		Epoch:          e.cfg.Epoch,
		Node:           n.node,
		Release:        r.release(),
		Deploy:         r.r.GetDeploy(),
		TraceContext:   traceContext(n.span),
		Owner:          e.cfg.ReplicaName + "/" + r.id(),
		Stage:          st.GetName(),
		Batch:          int32(n.batch),
		Kind:           kind,
		TakeoverLockOf: n.takeover,
	}
	switch kind {
	case outpostv1.AssignmentKind_ASSIGNMENT_KIND_ROLLBACK:
		msg.RollbackTo = n.rn.GetPreviousRelease()
	case outpostv1.AssignmentKind_ASSIGNMENT_KIND_RUN_HOOK:
		msg.Hook, msg.HookEnv = switchHook(r, n.rn.GetRollingBack())
	}
	e.sends = append(e.sends, send{n: n, s: s, msg: msg})
}

// release is what the rollout deploys, as assignments carry it.
func (r *run) release() *outpostv1.Release {
	return &outpostv1.Release{Id: r.r.GetReleaseId(), App: r.r.GetApp(), Artifact: r.r.GetArtifact()}
}

// isSwitch reports whether n is the switch node of a blue/green switch stage.
func (n *nodeRun) isSwitch() bool {
	return n.run.r.GetStages()[n.stage].GetKind() == outpostv1.StageKind_STAGE_KIND_SWITCH
}

// kind is what n's next assignment does.
func (n *nodeRun) kind() outpostv1.AssignmentKind {
	switch {
	case n.isSwitch():
		return outpostv1.AssignmentKind_ASSIGNMENT_KIND_RUN_HOOK
	case n.rn.GetRollingBack():
		return outpostv1.AssignmentKind_ASSIGNMENT_KIND_ROLLBACK
	}
	return outpostv1.AssignmentKind_ASSIGNMENT_KIND_DEPLOY
}
