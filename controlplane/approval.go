package controlplane

import (
	"context"
	"errors"
	"fmt"

	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/controlplane/rollout"
	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// callerApproval says whether the caller of ctx may approve r now, and why
// not, by the rules ApproveRollout applies: the rollout's state and four
// eyes (rollout.CheckApproval, self-approval as the engine decides it:
// AllowSelfApproval or the environment's allow_self_approval), then the
// caller's role (auth). Clients show it (the
// console disables its approve button with the reason) instead of
// guessing the policy; the call itself still decides.
func (s *Server) callerApproval(ctx context.Context, r *outpostv1.Rollout) *outpostv1.CallerApproval {
	name := callerName(ctx)
	var se *rollout.StateError
	policy := s.rolloutPolicy(rollout.Config{})
	switch err := rollout.CheckApproval(r, name, policy.SelfApproval(r)); {
	case errors.As(err, &se):
		return &outpostv1.CallerApproval{Reason: fmt.Sprintf("the rollout is %s; only a rollout PENDING_APPROVAL can be approved", rolloutstate.Name(r.GetState()))}
	case errors.Is(err, rollout.ErrSelfApproval):
		return &outpostv1.CallerApproval{Reason: fmt.Sprintf("four eyes: you (%s) requested this rollout; someone else must approve it", name)}
	case err != nil:
		return &outpostv1.CallerApproval{Reason: err.Error()}
	}
	id, ok := auth.FromContext(ctx)
	switch {
	case !ok || id.Kind != pki.KindUser:
		return &outpostv1.CallerApproval{Reason: "only a user with the approver or admin role can approve"}
	case !auth.Allows(id, auth.Approve):
		return &outpostv1.CallerApproval{Reason: fmt.Sprintf("your role (%s) cannot approve: approver or admin can", id.Role)}
	}
	return &outpostv1.CallerApproval{MayApprove: true, SelfApproval: name == r.GetRequester()}
}
