package rollout

import (
	"context"
	"strings"
	"time"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"go.opentelemetry.io/otel/trace"
)

// run is one rollout the engine drives.
type run struct {
	r     *outpostv1.Rollout
	order []*nodeRun // sorted by node id
	nodes map[string]*nodeRun
	// batches[stage][batch] are the nodes of each batch, in batch order.
	batches [][][]*nodeRun
	// stageNodes[stage] are all nodes of a stage.
	stageNodes [][]*nodeRun

	// revState is the state last written to the revision record.
	revState outpostv1.RolloutState

	// waitMsg is the "waiting for a gateway" message last put into
	// r.Message; empty when the rollout is not waiting.
	waitMsg string
	// queueMsg is the "waiting for rollout X" message last put into
	// r.Message while an earlier rollout of the app runs; empty otherwise.
	queueMsg string

	// Bake of the current stage (in memory: a new term starts over with
	// a fresh round). round is the health check round out now, nil
	// between rounds; nextRound is when the next one starts; bakeOK is
	// when the last round that found every node healthy started (zero:
	// none since the bake began).
	round     *bakeRound
	nextRound time.Time
	bakeOK    time.Time
	// ana is the canary analysis of the current stage (analysis.go); its
	// measurements are in etcd with the stage.
	ana analysisRun

	// Spans of this leadership term (see trace.go); nil when not
	// started. resumed: the term took the rollout over running.
	stageCtx  context.Context
	stageSpan trace.Span
	batchCtx  context.Context
	batchSpan trace.Span
	resumed   bool
}

// nodeRun is one node of a run.
type nodeRun struct {
	run   *run
	rn    *outpostv1.RolloutNode
	node  *outpostv1.Node // from the inventory; nil when the node was deleted
	stage int
	batch int

	// sess is the gateway session running the node's assignment; nil when
	// none (pending, finished, or orphaned).
	sess *session
	// orphanDeadline is when an orphaned assignment (its gateway went
	// away) is handed to another gateway.
	orphanDeadline time.Time
	span           trace.Span
	// refusals counts gateways refusing the node's assignments in a row.
	refusals int
	// takeover is the assignment whose lock on the node the node's next
	// assignment may take over (Assignment.takeover_lock_of): the last one
	// given up on after it had started, because its gateway went away.
	// "" when none; not kept across leaders for pending nodes.
	takeover string
	// notified is the final state OnNodeResult was last told about (or
	// the state loaded from etcd).
	notified outpostv1.NodeState
	// desired is the release this node's records last recorded as the
	// node's desired release (desired.go); "" when none. Loaded records
	// recorded theirs when they were written.
	desired string
	// written is when the node's record was last queued for writing; zero
	// before the first write of this leadership term.
	written time.Time
}

// setMessage sets the rollout's message, one that describes nothing the
// engine takes back by itself (message_kind UNSPECIFIED).
func (r *run) setMessage(msg string) {
	r.setMessageOf(outpostv1.RolloutMessageKind_ROLLOUT_MESSAGE_KIND_UNSPECIFIED, msg)
}

// setMessageOf sets the rollout's message and what it describes. Every
// message goes through here, so message_kind never describes an older
// message: decisions read the kind, the words are for people.
func (r *run) setMessageOf(kind outpostv1.RolloutMessageKind, msg string) {
	r.r.Message, r.r.MessageKind = msg, kind
}

// upgradeMessageKind fills message_kind of a rollout record written before
// the field existed, from the words those versions wrote; the only place
// that reads the message to decide anything.
func upgradeMessageKind(r *outpostv1.Rollout) {
	if r.GetMessageKind() != outpostv1.RolloutMessageKind_ROLLOUT_MESSAGE_KIND_UNSPECIFIED {
		return
	}
	msg := r.GetMessage()
	switch {
	case r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_PAUSED && (msg == "paused" || strings.HasPrefix(msg, "paused: ")):
		r.MessageKind = outpostv1.RolloutMessageKind_ROLLOUT_MESSAGE_KIND_PAUSED
	case r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_RUNNING && strings.HasPrefix(msg, "retrying "):
		r.MessageKind = outpostv1.RolloutMessageKind_ROLLOUT_MESSAGE_KIND_RETRYING
	}
}

func (r *run) id() string     { return r.r.GetId() }
func (n *nodeRun) id() string { return n.rn.GetNodeId() }

// aborting reports whether the rollout is stopping: its current stage
// failed (budget, abort, failed bake or traffic switch) and it waits for
// running nodes to finish and queued rollbacks to run.
func (r *run) aborting() bool {
	cur := int(r.r.GetCurrentStage())
	return r.r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_RUNNING &&
		cur >= 0 && cur < len(r.r.GetStages()) &&
		r.r.GetStages()[cur].GetState() == outpostv1.StageState_STAGE_STATE_FAILED
}

// rollbacksQueued reports whether nodes wait to be rolled back.
func (r *run) rollbacksQueued() bool {
	for _, n := range r.order {
		if n.rn.GetState() == outpostv1.NodeState_NODE_STATE_PENDING && n.rn.GetRollingBack() {
			return true
		}
	}
	return false
}

// stage returns the current stage, or nil before the first.
func (r *run) stage() *outpostv1.Stage {
	cur := int(r.r.GetCurrentStage())
	if cur < 0 || cur >= len(r.r.GetStages()) {
		return nil
	}
	return r.r.GetStages()[cur]
}

func (r *run) running() int {
	n := 0
	for _, nr := range r.order {
		if nr.rn.GetState() == outpostv1.NodeState_NODE_STATE_RUNNING {
			n++
		}
	}
	return n
}

// recount recomputes node counts of the rollout and its stages.
func (r *run) recount() {
	total := &outpostv1.NodeCounts{}
	for i, st := range r.r.GetStages() {
		c := &outpostv1.NodeCounts{}
		for _, n := range r.stageNodes[i] {
			rolloutstate.Add(c, n.rn.GetState())
			rolloutstate.Add(total, n.rn.GetState())
		}
		st.NodeCounts = c
	}
	r.r.NodeCounts = total
}
