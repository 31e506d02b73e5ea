package controlplane

import (
	"context"
	"errors"
	"fmt"

	"github.com/outposthq/outpost/controlplane/planner"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/plan"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Undo returns an app to an earlier revision with a new rollout, recorded
// as a new revision: the earlier revision's plan and artifact, and its
// release id, so a node that still holds releases/<id> (not pruned) makes
// it current again with no upload; a node that lost it gets it uploaded
// from the artifact store. "Current" is the newest revision that
// succeeded (SUCCEEDED, PENDING_VALIDATION or VALIDATED); without
// to_revision the target is the newest succeeded revision before it whose
// release differs. The undo follows its plan's approval rules, except the
// one a validation reject starts: the rejecting approver approved it.
//
// Blue/green apps: when the color not serving still holds the target's
// release (nothing deployed to it since), the undo only switches traffic
// back to it with the switch-back hook; otherwise it is a blue/green
// rollout of the target's release to the idle color.

// maxHistory bounds how many revisions of an app undo and blue/green read.
const maxHistory = 10000

// errNoEarlierRevision: nothing to return to.
var errNoEarlierRevision = errors.New("no earlier revision to return to")

// createUndo serves CreateRollout with undo set.
func (s *Server) createUndo(ctx context.Context, req *outpostv1.CreateRolloutRequest) (*outpostv1.CreateRolloutResponse, error) {
	u := req.GetUndo()
	switch {
	case req.GetPlan() != nil:
		return nil, fieldError("plan", "must be empty with undo: the plan of the revision returned to is used")
	case req.GetArtifactSha256() != "":
		return nil, fieldError("artifact_sha256", "must be empty with undo: the artifact of the revision returned to is used")
	case len(req.GetArtifactSignature()) > 0:
		return nil, fieldError("artifact_signature", "must be empty with undo: the signature of the revision returned to is verified again and used")
	case u.GetToRevision() < 0:
		return nil, fieldError("undo.to_revision", "%d: must not be negative", u.GetToRevision())
	}
	if err := store.CheckID(u.GetApp()); err != nil {
		return nil, fieldError("undo.app", "%v", err)
	}
	r, nodes, err := s.prepareUndo(ctx, u.GetApp(), u.GetToRevision(), 0)
	if errors.Is(err, errNoEarlierRevision) {
		return nil, status.Errorf(codes.FailedPrecondition, "undo %s: %v", u.GetApp(), err)
	}
	if err != nil {
		return nil, err
	}
	if err := s.envs.checkPlan(r.GetPlan()); err != nil {
		return nil, err
	}
	return s.createBuilt(ctx, req, r, nodes)
}

// rollbackRejected creates the undo of a rollout rejected at validation,
// approved by who, and returns its id; "" when there is nothing to return
// to. Its request id is derived from the rejected rollout, so a reject
// that is retried does not roll back twice.
func (s *Server) rollbackRejected(who string) func(ctx context.Context, rejected *outpostv1.Rollout) (string, error) {
	return func(ctx context.Context, rejected *outpostv1.Rollout) (string, error) {
		dedup := &requestRecord{key: store.CreateRequestKey("validation-reject-" + rejected.GetId()), hash: "validation-reject"}
		if prev, err := s.replay(ctx, dedup); err != nil || prev != nil {
			return prev.GetRollout().GetId(), err
		}
		r, nodes, err := s.prepareUndo(ctx, rejected.GetApp(), 0, rejected.GetRevision()+1)
		if errors.Is(err, errNoEarlierRevision) {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		r.Requester = who
		r.Approver = who
		r.ApproveTime = timestamppb.New(s.cfg.Clock.Now())
		if err := s.storeRollout(ctx, r, nodes, dedup); err != nil {
			if errors.Is(err, errDuplicateRequest) {
				prev, err := s.replay(ctx, dedup)
				return prev.GetRollout().GetId(), err
			}
			return "", err
		}
		return r.GetId(), nil
	}
}

// prepareUndo builds the rollout returning app to revision to (0: the
// newest succeeded revision before the current one with another release).
// below > 0 only considers revisions below it as current (a validation
// reject: the rejected one is current). errNoEarlierRevision when there is
// nothing to return to.
func (s *Server) prepareUndo(ctx context.Context, app string, to, below int64) (*outpostv1.Rollout, []*outpostv1.RolloutNode, error) {
	revs, err := s.appRevisions(ctx, app)
	if err != nil {
		return nil, nil, internal(err)
	}
	if len(revs) == 0 {
		return nil, nil, status.Errorf(codes.NotFound, "app %s has no revisions", app)
	}
	var cur *outpostv1.Revision
	for i := len(revs) - 1; i >= 0; i-- {
		if (below == 0 || revs[i].GetRevision() < below) && rolloutstate.Deployed(revs[i].GetState()) {
			cur = revs[i]
			break
		}
	}
	var target *outpostv1.Revision
	if to > 0 {
		for _, rv := range revs {
			if rv.GetRevision() == to {
				target = rv
			}
		}
		switch {
		case target == nil:
			return nil, nil, status.Errorf(codes.NotFound, "app %s has no revision %d", app, to)
		case !rolloutstate.Deployed(target.GetState()):
			return nil, nil, status.Errorf(codes.FailedPrecondition, "revision %d of %s is %s; undo applies only to a revision that succeeded",
				to, app, rolloutstate.Name(target.GetState()))
		case cur != nil && cur.GetRevision() == to:
			return nil, nil, status.Errorf(codes.FailedPrecondition, "revision %d is the current revision of %s", to, app)
		}
	} else {
		if cur == nil {
			return nil, nil, fmt.Errorf("%w: %s has no revision that succeeded", errNoEarlierRevision, app)
		}
		for i := len(revs) - 1; i >= 0; i-- {
			rv := revs[i]
			if rv.GetRevision() < cur.GetRevision() && rolloutstate.Deployed(rv.GetState()) && rv.GetReleaseId() != cur.GetReleaseId() {
				target = rv
				break
			}
		}
		if target == nil {
			return nil, nil, fmt.Errorf("%w: no revision of %s before %d succeeded with another release", errNoEarlierRevision, app, cur.GetRevision())
		}
	}
	src, err := s.getRollout(ctx, target.GetRolloutId())
	if err != nil {
		return nil, nil, err
	}
	art := proto.CloneOf(src.GetArtifact())
	if _, found, err := s.artifacts.Stat(art.GetSha256()); err != nil {
		return nil, nil, internal(err)
	} else if !found {
		return nil, nil, status.Errorf(codes.FailedPrecondition, "the artifact of revision %d (sha256:%s) is no longer in the artifact store; upload it again",
			target.GetRevision(), art.GetSha256())
	}
	spec := proto.CloneOf(src.GetPlan())
	var opts planner.Options
	if spec.GetStrategy().GetType() == plan.StrategyBlueGreen {
		bg, err := s.blueGreenHistory(ctx, app)
		if err != nil {
			return nil, nil, internal(err)
		}
		opts.LiveColor = bg.live
		for color, rel := range bg.holds {
			if rel == src.GetReleaseId() && color != bg.live {
				opts.SwitchBackTo = color
			}
		}
	}
	r, nodes, err := s.buildRollout(ctx, spec, art, opts)
	if err != nil {
		return nil, nil, err
	}
	r.ReleaseId = src.GetReleaseId()
	r.SourceRevision = target.GetRevision()
	return r, nodes, nil
}

// appRevisions reads app's revision records, oldest first.
func (s *Server) appRevisions(ctx context.Context, app string) ([]*outpostv1.Revision, error) {
	var out []*outpostv1.Revision
	after := ""
	for len(out) < maxHistory {
		next, err := s.store.List(ctx, store.RevisionsPrefix(app), 0, after, func(_ string, v []byte) error {
			rv := &outpostv1.Revision{}
			if err := proto.Unmarshal(v, rv); err != nil {
				return err
			}
			out = append(out, rv)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read revisions of %s: %w", app, err)
		}
		if next == "" {
			break
		}
		after = next
	}
	return out, nil
}

// bgHistory is what an app's blue/green rollouts left: which color serves
// traffic and which release each color holds.
type bgHistory struct {
	// live is the color the newest successful traffic switch went to; ""
	// when none.
	live string
	// holds maps a color to the release the newest rollout that deployed
	// to it left there.
	holds map[string]string
	// busy is the newest rollout of the app that has not ended; "" when none.
	busy string
}

// blueGreenHistory reads the app's rollouts, newest first, until it knows
// the live color and what both colors hold.
func (s *Server) blueGreenHistory(ctx context.Context, app string) (bgHistory, error) {
	h := bgHistory{holds: map[string]string{}}
	var ids []string
	if _, err := s.store.ListReverse(ctx, store.RevisionsPrefix(app), 500, "", func(_ string, v []byte) error {
		rv := &outpostv1.Revision{}
		if err := proto.Unmarshal(v, rv); err != nil {
			return err
		}
		ids = append(ids, rv.GetRolloutId())
		return nil
	}); err != nil {
		return h, fmt.Errorf("read revisions of %s: %w", app, err)
	}
	rs, err := s.getRollouts(ctx, ids)
	if err != nil {
		return h, err
	}
	for _, r := range rs {
		st := r.GetState()
		if h.busy == "" && !rolloutstate.Finished(st) {
			h.busy = r.GetId()
		}
		bg := r.GetBlueGreen()
		if bg == nil {
			continue
		}
		for i, stage := range r.GetStages() {
			switch {
			case stage.GetKind() == outpostv1.StageKind_STAGE_KIND_SWITCH:
				if h.live == "" && stage.GetState() == outpostv1.StageState_STAGE_STATE_SUCCEEDED {
					h.live = bg.GetTargetColor()
				}
			case i == 0 && !bg.GetSwitchBack():
				switch stage.GetState() {
				case outpostv1.StageState_STAGE_STATE_PENDING, outpostv1.StageState_STAGE_STATE_UNSPECIFIED, outpostv1.StageState_STAGE_STATE_SKIPPED:
				default:
					if _, ok := h.holds[bg.GetTargetColor()]; !ok {
						h.holds[bg.GetTargetColor()] = r.GetReleaseId()
					}
				}
			}
		}
		if h.live != "" && len(h.holds) >= 2 {
			break
		}
	}
	return h, nil
}
