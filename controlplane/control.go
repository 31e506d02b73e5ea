package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/controlplane/rollout"
	"github.com/outposthq/outpost/controlplane/store"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The rollout verbs (pause, resume, abort, promote, retry, approve,
// reject, validate) run on the leader's engine (controlplane/rollout,
// control.go there has the state machine); a follower answers UNAVAILABLE
// naming the leader. A verb refuses a rollout in a state it does not apply
// to (FAILED_PRECONDITION naming the state), also when it already took
// effect; so each accepts a request_id: a retried call with the same id
// returns the rollout as it is now instead of acting again (or being
// refused), also while the first call is still running.

// anonymous is the caller's name when the call carries no identity.
const anonymous = "anonymous"

// callerName names the caller for requester, approver and messages: the
// authenticated identity's name, or "anonymous" without one. Two anonymous
// callers are the same person as far as four eyes go.
func callerName(ctx context.Context) string {
	if id, ok := auth.FromContext(ctx); ok && id.Name != "" {
		return id.Name
	}
	return anonymous
}

// rolloutPolicy adds the approval rules to an engine config.
func (s *Server) rolloutPolicy(c rollout.Config) rollout.Config {
	c.ApprovalTTL = s.cfg.ApprovalTTL
	c.AllowSelfApproval = s.cfg.AllowSelfApproval
	for name, env := range s.envs {
		if env.AllowSelfApproval {
			if c.SelfApprovalEnvironments == nil {
				c.SelfApprovalEnvironments = map[string]bool{}
			}
			c.SelfApprovalEnvironments[name] = true
		}
		if env.ApprovalTTL > 0 {
			if c.EnvironmentApprovalTTL == nil {
				c.EnvironmentApprovalTTL = map[string]time.Duration{}
			}
			c.EnvironmentApprovalTTL[name] = env.ApprovalTTL
		}
	}
	return c
}

// messageHash identifies a request's content, request_id aside.
func messageHash(m proto.Message) string {
	c := proto.Clone(m)
	if f := c.ProtoReflect().Descriptor().Fields().ByName("request_id"); f != nil {
		c.ProtoReflect().Clear(f)
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// runVerb checks the rollout id, replays a request_id seen before, and
// otherwise runs do on the leader's engine and remembers the request_id.
// Calls with the same request_id, rollout and content that arrive while
// the first runs wait for it and share its result (or error).
func (s *Server) runVerb(ctx context.Context, verb, id, requestID string, req proto.Message,
	do func(ctx context.Context, eng *rollout.Engine) (*outpostv1.Rollout, error)) (*outpostv1.Rollout, error) {
	if err := checkRolloutID("id", id); err != nil {
		return nil, err
	}
	if requestID == "" {
		return s.runVerbOnce(ctx, verb, id, nil, do)
	}
	if err := checkRequestID(requestID); err != nil {
		return nil, err
	}
	rec := &requestRecord{key: store.VerbRequestKey(verb, requestID), hash: messageHash(req)}
	// The first call runs on its own goroutine (and context); the others
	// wait for it.
	v, err, shared := s.verbCalls.Do(rec.key+" "+id+" "+rec.hash, func() (any, error) {
		return s.runVerbOnce(ctx, verb, id, rec, do)
	})
	if err != nil {
		return nil, err
	}
	r := v.(*outpostv1.Rollout)
	if shared {
		r = proto.CloneOf(r)
	}
	return r, nil
}

// runVerbOnce is runVerb for one call (or several identical ones).
func (s *Server) runVerbOnce(ctx context.Context, verb, id string, rec *requestRecord,
	do func(ctx context.Context, eng *rollout.Engine) (*outpostv1.Rollout, error)) (*outpostv1.Rollout, error) {
	if rec != nil {
		v := &wrapperspb.StringValue{}
		found, _, err := s.store.Get(ctx, rec.key, v)
		if err != nil {
			return nil, internal(err)
		}
		if found {
			prevID, hash, _ := strings.Cut(v.GetValue(), " ")
			if hash != rec.hash || prevID != id {
				return nil, fieldError("request_id", "already used by a different %s request (rollout %s)", verb, prevID)
			}
			return s.getRollout(ctx, id)
		}
	}
	eng := s.leaderEngine()
	if eng == nil {
		return nil, s.notLeader(ctx)
	}
	r, err := do(ctx, eng)
	if err != nil {
		return nil, s.verbStatus(ctx, err)
	}
	if rec != nil {
		// The verb happened: remember it even if the caller went away.
		// Without the record a later retry is refused by the rollout's
		// new state, which still says what happened.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestRecordTimeout)
		defer cancel()
		if err := s.store.PutLeased(wctx, rec.key, wrapperspb.String(id+" "+rec.hash), requestTTL*time.Second); err != nil {
			s.log.Warn("request_id of a rollout verb not recorded; a retry will be refused by the rollout's state",
				"rollout", id, "key", rec.key, "err", err)
		}
	}
	return r, nil
}

// requestRecordTimeout bounds writing a verb's request_id record.
const requestRecordTimeout = 5 * time.Second

// verbStatus converts the engine's verb errors to status codes.
func (s *Server) verbStatus(ctx context.Context, err error) error {
	var pe *rollout.PreconditionError
	var ae *rollout.ArgumentError
	switch {
	case errors.Is(err, rollout.ErrSelfApproval):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.As(err, &pe):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.As(err, &ae):
		return fieldError(ae.Field, "%s", ae.Msg)
	}
	return s.engineStatus(ctx, err)
}

func checkText(field, s string) error {
	if len(s) > 1000 {
		return fieldError(field, "longer than 1000 characters")
	}
	return nil
}

// AbortRollout aborts a rollout.
func (c *controlPlaneService) AbortRollout(ctx context.Context, req *outpostv1.AbortRolloutRequest) (*outpostv1.AbortRolloutResponse, error) {
	if err := checkText("reason", req.GetReason()); err != nil {
		return nil, err
	}
	r, err := c.s.runVerb(ctx, "abort", req.GetId(), req.GetRequestId(), req, func(ctx context.Context, eng *rollout.Engine) (*outpostv1.Rollout, error) {
		return eng.Abort(ctx, req.GetId(), req.GetReason())
	})
	if err != nil {
		return nil, err
	}
	return &outpostv1.AbortRolloutResponse{Rollout: r}, nil
}

// PauseRollout pauses a running rollout.
func (c *controlPlaneService) PauseRollout(ctx context.Context, req *outpostv1.PauseRolloutRequest) (*outpostv1.PauseRolloutResponse, error) {
	if err := checkText("reason", req.GetReason()); err != nil {
		return nil, err
	}
	r, err := c.s.runVerb(ctx, "pause", req.GetId(), req.GetRequestId(), req, func(ctx context.Context, eng *rollout.Engine) (*outpostv1.Rollout, error) {
		return eng.Pause(ctx, req.GetId(), req.GetReason())
	})
	if err != nil {
		return nil, err
	}
	return &outpostv1.PauseRolloutResponse{Rollout: r}, nil
}

// ResumeRollout resumes a paused rollout.
func (c *controlPlaneService) ResumeRollout(ctx context.Context, req *outpostv1.ResumeRolloutRequest) (*outpostv1.ResumeRolloutResponse, error) {
	r, err := c.s.runVerb(ctx, "resume", req.GetId(), req.GetRequestId(), req, func(ctx context.Context, eng *rollout.Engine) (*outpostv1.Rollout, error) {
		return eng.Resume(ctx, req.GetId())
	})
	if err != nil {
		return nil, err
	}
	return &outpostv1.ResumeRolloutResponse{Rollout: r}, nil
}

// PromoteRollout moves a rollout past the stage that waits.
func (c *controlPlaneService) PromoteRollout(ctx context.Context, req *outpostv1.PromoteRolloutRequest) (*outpostv1.PromoteRolloutResponse, error) {
	r, err := c.s.runVerb(ctx, "promote", req.GetId(), req.GetRequestId(), req, func(ctx context.Context, eng *rollout.Engine) (*outpostv1.Rollout, error) {
		return eng.Promote(ctx, req.GetId(), req.GetStage())
	})
	if err != nil {
		return nil, err
	}
	return &outpostv1.PromoteRolloutResponse{Rollout: r}, nil
}

// RetryRollout deploys the failed nodes of a rollout again.
func (c *controlPlaneService) RetryRollout(ctx context.Context, req *outpostv1.RetryRolloutRequest) (*outpostv1.RetryRolloutResponse, error) {
	for i, id := range req.GetNodeIds() {
		if err := store.CheckID(id); err != nil {
			return nil, fieldError("node_ids["+strconv.Itoa(i)+"]", "%v", err)
		}
	}
	r, err := c.s.runVerb(ctx, "retry", req.GetId(), req.GetRequestId(), req, func(ctx context.Context, eng *rollout.Engine) (*outpostv1.Rollout, error) {
		return eng.Retry(ctx, req.GetId(), req.GetNodeIds())
	})
	if err != nil {
		return nil, err
	}
	return &outpostv1.RetryRolloutResponse{Rollout: r}, nil
}

// ApproveRollout approves a rollout; the approver must not be the requester.
func (c *controlPlaneService) ApproveRollout(ctx context.Context, req *outpostv1.ApproveRolloutRequest) (*outpostv1.ApproveRolloutResponse, error) {
	if err := checkText("comment", req.GetComment()); err != nil {
		return nil, err
	}
	r, err := c.s.runVerb(ctx, "approve", req.GetId(), req.GetRequestId(), req, func(ctx context.Context, eng *rollout.Engine) (*outpostv1.Rollout, error) {
		return eng.Approve(ctx, req.GetId(), callerName(ctx), req.GetComment())
	})
	if err != nil {
		return nil, err
	}
	return &outpostv1.ApproveRolloutResponse{Rollout: r}, nil
}

// RejectRollout rejects a rollout waiting for approval, or one waiting for
// validation, which is then rolled back by an undo rollout.
func (c *controlPlaneService) RejectRollout(ctx context.Context, req *outpostv1.RejectRolloutRequest) (*outpostv1.RejectRolloutResponse, error) {
	if err := checkText("reason", req.GetReason()); err != nil {
		return nil, err
	}
	who := callerName(ctx)
	r, err := c.s.runVerb(ctx, "reject", req.GetId(), req.GetRequestId(), req, func(ctx context.Context, eng *rollout.Engine) (*outpostv1.Rollout, error) {
		return eng.Reject(ctx, req.GetId(), who, req.GetReason(), c.s.rollbackRejected(who))
	})
	if err != nil {
		return nil, err
	}
	return &outpostv1.RejectRolloutResponse{Rollout: r}, nil
}

// ValidateRollout accepts a rollout waiting for validation.
func (c *controlPlaneService) ValidateRollout(ctx context.Context, req *outpostv1.ValidateRolloutRequest) (*outpostv1.ValidateRolloutResponse, error) {
	if err := checkText("comment", req.GetComment()); err != nil {
		return nil, err
	}
	r, err := c.s.runVerb(ctx, "validate", req.GetId(), req.GetRequestId(), req, func(ctx context.Context, eng *rollout.Engine) (*outpostv1.Rollout, error) {
		return eng.Validate(ctx, req.GetId(), callerName(ctx), req.GetComment())
	})
	if err != nil {
		return nil, err
	}
	return &outpostv1.ValidateRolloutResponse{Rollout: r}, nil
}

// Page sizes of ListRevisions.
const (
	defaultRevisionsPage = 50
	maxRevisionsPage     = 1000
)

// ListRevisions lists an app's revisions, newest first.
func (c *controlPlaneService) ListRevisions(ctx context.Context, req *outpostv1.ListRevisionsRequest) (*outpostv1.ListRevisionsResponse, error) {
	app := req.GetApp()
	if app == "" {
		return nil, fieldError("app", "required")
	}
	if err := store.CheckID(app); err != nil {
		return nil, fieldError("app", "%v", err)
	}
	kind := "revisions:" + app
	pos, ok := decodeToken(kind, req.GetPageToken())
	if !ok {
		return nil, fieldError("page_token", "not a token returned by ListRevisions for app %s", app)
	}
	var before string // exclusive: revisions below it
	if pos != "" {
		n, err := strconv.ParseInt(pos, 10, 64)
		if err != nil || n < 1 {
			return nil, fieldError("page_token", "not a token returned by ListRevisions")
		}
		before = store.RevisionKey(app, n)
	}
	size := pageSize(req.GetPageSize(), defaultRevisionsPage, maxRevisionsPage)
	resp := &outpostv1.ListRevisionsResponse{}
	next, err := c.s.store.ListReverse(ctx, store.RevisionsPrefix(app), int64(size), before, func(_ string, v []byte) error {
		rv := &outpostv1.Revision{}
		if err := proto.Unmarshal(v, rv); err != nil {
			return err
		}
		resp.Revisions = append(resp.Revisions, rv)
		return nil
	})
	if err != nil {
		return nil, internal(err)
	}
	if next != "" && len(resp.Revisions) > 0 {
		resp.NextPageToken = encodeToken(kind, strconv.FormatInt(resp.Revisions[len(resp.Revisions)-1].GetRevision(), 10))
	}
	return resp, nil
}
