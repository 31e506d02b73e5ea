package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The verbs people use on rollouts. Each runs on the engine's loop and
// returns the rollout once its change is in etcd. Each applies to some
// states only (the *States lists below) and refuses a rollout in any other
// with a *StateError naming its state, also when the verb already took
// effect (pausing a paused rollout): whoever repeats a verb learns that it
// had been done, and the audit log records the repeat as refused. A
// retried call, one with the same request_id, is answered from the first
// call's result by the control plane without reaching the engine.
//
// States (DESIGN.md, Rollout states):
//
//	PENDING_APPROVAL -Approve-> APPROVED -start-> RUNNING -Pause-> PAUSED -Resume-> RUNNING
//	RUNNING -stage with pause: manual done-> PAUSED (stage WAITING_PROMOTION) -Promote-> RUNNING
//	RUNNING -last stage done-> SUCCEEDED, or PENDING_VALIDATION -Validate-> VALIDATED
//	PENDING_VALIDATION -Reject-> REJECTED (and an undo rollout returns the app to its previous revision)
//	PENDING_APPROVAL -Reject-> REJECTED
//	APPROVED -approval older than ApprovalTTL, not started-> PENDING_APPROVAL
//	any non-final -Abort, or failure budget-> ABORTED once no node runs
//	RUNNING -bake or traffic switch fails-> FAILED_ROLLED_BACK once the rollbacks ran
//	SUCCEEDED, ABORTED, FAILED_ROLLED_BACK -Retry-> RUNNING (failed nodes only)

// The states each verb applies to.
var (
	abortStates = []outpostv1.RolloutState{outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL,
		outpostv1.RolloutState_ROLLOUT_STATE_APPROVED, outpostv1.RolloutState_ROLLOUT_STATE_RUNNING,
		outpostv1.RolloutState_ROLLOUT_STATE_PAUSED}
	pauseStates  = []outpostv1.RolloutState{outpostv1.RolloutState_ROLLOUT_STATE_RUNNING}
	resumeStates = []outpostv1.RolloutState{outpostv1.RolloutState_ROLLOUT_STATE_PAUSED}
	retryStates  = []outpostv1.RolloutState{outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED,
		outpostv1.RolloutState_ROLLOUT_STATE_ABORTED, outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK}
	approveStates = []outpostv1.RolloutState{outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL}
	rejectStates  = []outpostv1.RolloutState{outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL,
		outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION}
	validateStates = []outpostv1.RolloutState{outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION}
)

// appliesTo returns a *StateError unless state is one of states.
func appliesTo(id string, state outpostv1.RolloutState, verb string, states []outpostv1.RolloutState) error {
	if slices.Contains(states, state) {
		return nil
	}
	names := make([]string, len(states))
	for i, st := range states {
		names[i] = rolloutstate.Name(st)
	}
	list := names[len(names)-1]
	if len(names) > 1 {
		list = strings.Join(names[:len(names)-1], ", ") + " or " + list
	}
	return &StateError{ID: id, State: state, Verb: verb, AppliesTo: list}
}

// ErrSelfApproval: the approver is the requester, and four eyes are required.
var ErrSelfApproval = errors.New("the requester cannot approve their own rollout")

// PreconditionError is a verb refused because of where the rollout stands,
// with a sentence saying what to do instead.
type PreconditionError struct {
	ID  string
	Msg string
}

func (e *PreconditionError) Error() string { return "rollout " + e.ID + ": " + e.Msg }

// ArgumentError is a verb refused because of an argument.
type ArgumentError struct {
	Field string
	Msg   string
}

func (e *ArgumentError) Error() string { return e.Field + ": " + e.Msg }

// verb runs f on the loop against rollout id (loaded from etcd when the
// engine does not drive it) and returns the rollout once f's changes are
// durable. f changes the rollout through the engine's helpers; a rollout
// that f makes active is registered with the engine.
func (e *Engine) verb(ctx context.Context, id string, f func(ctx context.Context, r *run) error) (*outpostv1.Rollout, error) {
	v, err := e.doDurable(ctx, func(lctx context.Context) (any, error) {
		r := e.runs[id]
		if r == nil {
			var err error
			if r, err = e.loadOne(lctx, id); err != nil {
				return nil, err
			}
		}
		if err := f(lctx, r); err != nil {
			return nil, err
		}
		if rolloutstate.Active(r.r.GetState()) && e.runs[id] == nil {
			e.adopt(r)
		}
		r.recount()
		r.r.UpdateTime = timestamppb.New(e.cfg.Clock.Now())
		return proto.CloneOf(r.r), nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*outpostv1.Rollout), nil
}

func withReason(msg, reason string) string {
	if reason = strings.TrimSpace(reason); reason != "" {
		return msg + ": " + reason
	}
	return msg
}

// Abort stops a rollout: no new node starts, pending nodes become SKIPPED,
// running nodes finish (or roll back), rollbacks already queued still run;
// the rollout is ABORTED once none runs. It returns the rollout after the
// change is durable: still RUNNING (with a message saying it is aborting)
// while nodes finish, else ABORTED. Aborting an aborted or aborting
// rollout is refused.
func (e *Engine) Abort(ctx context.Context, id, reason string) (*outpostv1.Rollout, error) {
	return e.verb(ctx, id, func(_ context.Context, r *run) error {
		if err := appliesTo(id, r.r.GetState(), "abort", abortStates); err != nil {
			return err
		}
		if r.aborting() {
			return &PreconditionError{ID: id, Msg: "it is RUNNING and already aborting (" + r.r.GetMessage() + "); it ends once its running nodes finish"}
		}
		e.log.Info("rollout aborted by request", "rollout", id, "reason", reason)
		e.abort(r, withReason("aborted", reason))
		return nil
	})
}

// Pause stops a running rollout from starting nodes; running nodes finish
// and a bake stops checking (its time keeps running). RUNNING -> PAUSED.
func (e *Engine) Pause(ctx context.Context, id, reason string) (*outpostv1.Rollout, error) {
	return e.verb(ctx, id, func(_ context.Context, r *run) error {
		if err := appliesTo(id, r.r.GetState(), "pause", pauseStates); err != nil {
			return err
		}
		if r.aborting() {
			return &PreconditionError{ID: id, Msg: "it is aborting (" + r.r.GetMessage() + "); it cannot be paused"}
		}
		r.r.State = outpostv1.RolloutState_ROLLOUT_STATE_PAUSED
		r.setMessageOf(outpostv1.RolloutMessageKind_ROLLOUT_MESSAGE_KIND_PAUSED, withReason("paused", reason))
		r.waitMsg, r.queueMsg = "", ""
		e.dropChecks(r)
		e.markRun(r)
		e.log.Info("rollout paused", "rollout", id, "reason", reason)
		return nil
	})
}

// Resume continues a paused rollout. PAUSED -> RUNNING. A rollout that
// waits for promotion after a stage with pause: manual needs Promote.
func (e *Engine) Resume(ctx context.Context, id string) (*outpostv1.Rollout, error) {
	return e.verb(ctx, id, func(_ context.Context, r *run) error { return e.resume(r) })
}

// resume is Resume on a loaded rollout. It clears the message Pause left,
// not one that only reads like it.
func (e *Engine) resume(r *run) error {
	if err := appliesTo(r.id(), r.r.GetState(), "resume", resumeStates); err != nil {
		return err
	}
	if s := r.stage(); s.GetState() == outpostv1.StageState_STAGE_STATE_WAITING_PROMOTION {
		return &PreconditionError{ID: r.id(), Msg: fmt.Sprintf("stage %s waits for promotion: run promote, not resume", s.GetName())}
	}
	r.r.State = outpostv1.RolloutState_ROLLOUT_STATE_RUNNING
	if r.r.GetMessageKind() == outpostv1.RolloutMessageKind_ROLLOUT_MESSAGE_KIND_PAUSED {
		r.setMessage("")
	}
	e.markRun(r)
	e.log.Info("rollout resumed", "rollout", r.id())
	return nil
}

// Promote moves past the stage that waits: one done with pause: manual
// (PAUSED -> RUNNING), or one baking (the rest of the bake, and a manual
// pause after it, are skipped). stage, when not empty, must name that
// stage, so a stale promote cannot skip the next one.
func (e *Engine) Promote(ctx context.Context, id, stage string) (*outpostv1.Rollout, error) {
	return e.verb(ctx, id, func(_ context.Context, r *run) error {
		st := r.stage()
		waiting := st != nil && ((r.r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_PAUSED &&
			st.GetState() == outpostv1.StageState_STAGE_STATE_WAITING_PROMOTION) ||
			(r.r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_RUNNING && !r.aborting() &&
				st.GetState() == outpostv1.StageState_STAGE_STATE_BAKING))
		if !waiting {
			se := &StateError{ID: id, State: r.r.GetState(), Verb: "promote",
				AppliesTo: "a rollout whose stage waits for promotion (PAUSED) or bakes (RUNNING)"}
			if st != nil {
				se.Stage = "stage " + st.GetName() + " " + rolloutstate.StageName(st.GetState())
			}
			return se
		}
		if stage != "" && stage != st.GetName() {
			return &PreconditionError{ID: id, Msg: fmt.Sprintf("stage %s waits for promotion, not %s", st.GetName(), stage)}
		}
		e.dropChecks(r)
		st.BakeEndTime = nil
		st.State = outpostv1.StageState_STAGE_STATE_SUCCEEDED
		st.EndTime = timestamppb.New(e.cfg.Clock.Now())
		r.bakeOK = time.Time{}
		if r.r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_PAUSED {
			r.r.State = outpostv1.RolloutState_ROLLOUT_STATE_RUNNING
			r.setMessage("")
		}
		e.markRun(r)
		e.log.Info("stage promoted", "rollout", id, "stage", st.GetName())
		return nil
	})
}

// retryable reports whether a node in state s is retried when no node is named.
func retryable(s outpostv1.NodeState) bool {
	return s == outpostv1.NodeState_NODE_STATE_FAILED || s == outpostv1.NodeState_NODE_STATE_ROLLED_BACK
}

// Retry deploys again the failed nodes of a rollout that ended
// SUCCEEDED, ABORTED or FAILED_ROLLED_BACK: nodeIDs, or every FAILED and
// ROLLED_BACK node when empty (ROLLBACK_FAILED nodes only when named).
// Only those nodes run, stage by stage in their batches; skipped nodes
// stay skipped, and a rollout that still has some ends ABORTED. Only the
// newest rollout of an app may be retried, and only while no other
// rollout of the app runs: retrying an older one would undo a newer one.
func (e *Engine) Retry(ctx context.Context, id string, nodeIDs []string) (*outpostv1.Rollout, error) {
	return e.verb(ctx, id, func(lctx context.Context, r *run) error {
		if err := appliesTo(id, r.r.GetState(), "retry", retryStates); err != nil {
			return err
		}
		latest, err := e.latestRevision(lctx, r.r.GetApp())
		if err != nil {
			return err
		}
		if latest.GetRolloutId() != id {
			return &PreconditionError{ID: id, Msg: fmt.Sprintf("it is not the newest rollout of %s (revision %d, rollout %s, is): retrying it would undo that one",
				r.r.GetApp(), latest.GetRevision(), latest.GetRolloutId())}
		}
		for _, o := range e.runs {
			if o != r && o.r.GetApp() == r.r.GetApp() {
				return &PreconditionError{ID: id, Msg: fmt.Sprintf("rollout %s of %s is %s; retry once it ended", o.id(), r.r.GetApp(), rolloutstate.Name(o.r.GetState()))}
			}
		}
		var pick []*nodeRun
		if len(nodeIDs) == 0 {
			for _, n := range r.order {
				if retryable(n.rn.GetState()) {
					pick = append(pick, n)
				}
			}
			if len(pick) == 0 {
				return &PreconditionError{ID: id, Msg: "no FAILED or ROLLED_BACK node to retry"}
			}
		} else {
			for _, nid := range nodeIDs {
				n := r.nodes[nid]
				switch {
				case n == nil:
					return &ArgumentError{Field: "node_ids", Msg: fmt.Sprintf("node %s is not part of rollout %s", nid, id)}
				case !retryable(n.rn.GetState()) && n.rn.GetState() != outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED:
					return &ArgumentError{Field: "node_ids", Msg: fmt.Sprintf("node %s is %s, not failed", nid, rolloutstate.NodeName(n.rn.GetState()))}
				}
				if !slices.Contains(pick, n) {
					pick = append(pick, n)
				}
			}
		}
		first := len(r.r.GetStages())
		for _, n := range pick {
			n.rn.State = outpostv1.NodeState_NODE_STATE_PENDING
			n.rn.Error, n.rn.AssignmentId, n.rn.Gateway = "", "", ""
			n.rn.Step, n.rn.StepPhase = outpostv1.Step_STEP_UNSPECIFIED, outpostv1.StepPhase_STEP_PHASE_UNSPECIFIED
			n.rn.RollingBack = false
			n.rn.StartTime = nil
			e.markNode(n)
			st := r.r.GetStages()[n.stage]
			st.State = outpostv1.StageState_STAGE_STATE_PENDING
			st.StartTime, st.EndTime, st.BakeEndTime = nil, nil, nil
			st.CurrentBatch = -1
			first = min(first, n.stage)
		}
		r.r.State = outpostv1.RolloutState_ROLLOUT_STATE_RUNNING
		r.r.CurrentStage = int32(first)
		r.setMessageOf(outpostv1.RolloutMessageKind_ROLLOUT_MESSAGE_KIND_RETRYING, fmt.Sprintf("retrying %d failed node(s)", len(pick)))
		r.waitMsg, r.queueMsg = "", ""
		e.enterStage(r)
		e.markRun(r)
		e.log.Info("rollout retried", "rollout", id, "nodes", len(pick))
		return nil
	})
}

// latestRevision reads the newest revision record of app.
func (e *Engine) latestRevision(ctx context.Context, app string) (*outpostv1.Revision, error) {
	rev := &outpostv1.Revision{}
	if _, err := e.cfg.Store.Last(ctx, store.RevisionsPrefix(app), rev); err != nil {
		return nil, fmt.Errorf("read the latest revision of %s: %w", app, err)
	}
	return rev, nil
}

// CheckApproval reports whether approver may approve r now: r must wait
// for approval (else a *StateError), and approver must not be its
// requester unless allowSelf (else ErrSelfApproval). Roles are the
// caller's business (auth). It is the one statement of the approval
// rule: Approve enforces it, and the API answers it in advance.
func CheckApproval(r *outpostv1.Rollout, approver string, allowSelf bool) error {
	if err := appliesTo(r.GetId(), r.GetState(), "approve", approveStates); err != nil {
		return err
	}
	if !allowSelf && approver == r.GetRequester() {
		return fmt.Errorf("%w: %s asked for rollout %s; another person must approve it", ErrSelfApproval, approver, r.GetId())
	}
	return nil
}

// SelfApproval reports whether c lets r's requester approve r:
// AllowSelfApproval, or r's environment is in SelfApprovalEnvironments.
// Approve and the API's answer in advance (CallerApproval) both ask it.
func (c *Config) SelfApproval(r *outpostv1.Rollout) bool {
	return c.AllowSelfApproval || c.SelfApprovalEnvironments[r.GetPlan().GetEnvironment()]
}

// Approve approves a rollout waiting for approval; the approver must not
// be its requester unless Config.SelfApproval allows it. PENDING_APPROVAL ->
// APPROVED, after which it starts as soon as no earlier rollout of its
// app runs. Approving it again is refused: it is APPROVED (or further).
func (e *Engine) Approve(ctx context.Context, id, approver, comment string) (*outpostv1.Rollout, error) {
	return e.verb(ctx, id, func(_ context.Context, r *run) error {
		if err := CheckApproval(r.r, approver, e.cfg.SelfApproval(r.r)); err != nil {
			return err
		}
		r.r.State = outpostv1.RolloutState_ROLLOUT_STATE_APPROVED
		r.r.Approver = approver
		r.r.ApproveTime = timestamppb.New(e.cfg.Clock.Now())
		r.setMessage("")
		e.markRun(r)
		e.log.Info("rollout approved", "rollout", id, "approver", approver, "comment", comment)
		return nil
	})
}

// expireApprovals sends approved rollouts that did not start within
// ApprovalTTL back to PENDING_APPROVAL: what was approved a day ago may
// not be what the approver would accept today.
func (e *Engine) expireApprovals(now time.Time) {
	for _, r := range e.runs {
		at := r.r.GetApproveTime()
		ttl := e.cfg.ApprovalTTL
		if d, ok := e.cfg.EnvironmentApprovalTTL[r.r.GetPlan().GetEnvironment()]; ok && d > 0 {
			ttl = d
		}
		if r.r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_APPROVED || at == nil || now.Sub(at.AsTime()) < ttl {
			continue
		}
		r.setMessage(fmt.Sprintf("the approval by %s expired: the rollout did not start within %v; approve it again", r.r.GetApprover(), ttl))
		r.r.State = outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL
		r.r.Approver = ""
		r.r.ApproveTime = nil
		r.queueMsg = ""
		e.markRun(r)
		e.log.Info("approval expired", "rollout", r.id())
	}
}

// Rollback starts the undo that a validation reject asks for: it creates
// a rollout returning the app to its previous revision and returns its id,
// "" when there is no earlier revision to return to.
type Rollback func(ctx context.Context, rejected *outpostv1.Rollout) (string, error)

// Reject rejects a rollout waiting for approval (-> REJECTED, nothing ran)
// or for validation: then rollback is called first to create the undo
// rollout, and the rollout ends REJECTED, its message naming the undo.
// Rejecting a rejected rollout is refused.
func (e *Engine) Reject(ctx context.Context, id, who, reason string, rollback Rollback) (*outpostv1.Rollout, error) {
	return e.verb(ctx, id, func(lctx context.Context, r *run) error {
		if err := appliesTo(id, r.r.GetState(), "reject", rejectStates); err != nil {
			return err
		}
		switch r.r.GetState() {
		case outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL:
			r.r.Approver = who
			r.setMessage(withReason("rejected by "+who, reason))
			e.skipRest(r)
			e.finish(r, outpostv1.RolloutState_ROLLOUT_STATE_REJECTED)
		case outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION:
			undo, err := rollback(lctx, proto.CloneOf(r.r))
			if err != nil {
				return fmt.Errorf("roll back rejected rollout %s: %w", id, err)
			}
			msg := withReason("rejected at validation by "+who, reason)
			if undo != "" {
				msg += "; rolling back with rollout " + undo
			} else {
				msg += "; no earlier revision to roll back to: the nodes keep release " + r.r.GetReleaseId()
			}
			r.setMessage(msg)
			e.finish(r, outpostv1.RolloutState_ROLLOUT_STATE_REJECTED)
		}
		e.log.Info("rollout rejected", "rollout", id, "by", who, "reason", reason)
		return nil
	})
}

// Validate accepts a rollout waiting for validation. PENDING_VALIDATION ->
// VALIDATED; validating again is refused.
func (e *Engine) Validate(ctx context.Context, id, who, comment string) (*outpostv1.Rollout, error) {
	return e.verb(ctx, id, func(_ context.Context, r *run) error {
		if err := appliesTo(id, r.r.GetState(), "validate", validateStates); err != nil {
			return err
		}
		r.setMessage(withReason("validated by "+who, comment))
		e.finish(r, outpostv1.RolloutState_ROLLOUT_STATE_VALIDATED)
		e.log.Info("rollout validated", "rollout", id, "by", who)
		return nil
	})
}
