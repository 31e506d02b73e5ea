package controlplane

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/outposthq/outpost/controlplane/leader"
	"github.com/outposthq/outpost/controlplane/planner"
	"github.com/outposthq/outpost/controlplane/rollout"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/plan"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fieldError is INVALID_ARGUMENT naming one request field.
// Reasons in google.rpc.ErrorInfo, for clients to act on without reading
// messages.
const (
	errorDomain = "outpost.v1"
	// ReasonHostKeyMismatch: TrustNodeHostKey was given a fingerprint that
	// is not the scanned key's.
	ReasonHostKeyMismatch = "HOST_KEY_MISMATCH"
)

func fieldError(field string, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return withViolations(codes.InvalidArgument, field+": "+msg, []*errdetails.BadRequest_FieldViolation{{Field: field, Description: msg}})
}

// planStatus converts an error from internal/plan or the planner into a
// status whose message and BadRequest details name every field at fault.
// prefix is prepended to field paths ("plan." for CreateRollout).
func planStatus(err error, prefix string) error {
	var ue *planner.UnsupportedError
	if errors.As(err, &ue) {
		return withViolations(codes.Unimplemented, prefix+ue.Error(), []*errdetails.BadRequest_FieldViolation{{Field: prefix + ue.Field, Description: ue.What + " is not supported yet"}})
	}
	fes := plan.FieldErrors(err)
	if len(fes) == 0 {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	var msgs []string
	var vs []*errdetails.BadRequest_FieldViolation
	for _, fe := range fes {
		field := prefix + fe.Field
		if fe.Field == "plan" && prefix == "plan." {
			field = "plan" // the plan as a whole (its size)
		}
		msgs = append(msgs, (&plan.FieldError{Field: field, Err: fe.Err, Line: fe.Line}).Error())
		vs = append(vs, &errdetails.BadRequest_FieldViolation{Field: field, Description: fe.Err.Error()})
	}
	return withViolations(codes.InvalidArgument, strings.Join(msgs, "; "), vs)
}

func withViolations(code codes.Code, msg string, vs []*errdetails.BadRequest_FieldViolation) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: vs}); err == nil {
		st = d
	}
	return st.Err()
}

// internal reports an unexpected failure (etcd, disk) without hiding it.
func internal(err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}

// engineStatus converts rollout engine errors.
func (s *Server) engineStatus(ctx context.Context, err error) error {
	var se *rollout.StateError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rollout.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.As(err, &se):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, rollout.ErrStopped), errors.Is(err, store.ErrNotLeader), errors.Is(err, rollout.ErrLeadershipEnded):
		return s.notLeader(ctx)
	case errors.Is(err, rollout.ErrReplaced):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, rollout.ErrHeartbeatTimeout):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return internal(err)
}

// notLeader is UNAVAILABLE naming the leader, so the caller retries
// (through a load balancer, or against the named replica).
func (s *Server) notLeader(ctx context.Context) error {
	select {
	case <-s.quit:
		return status.Error(codes.Unavailable, "control plane is shutting down")
	default:
	}
	name, _, err := leader.Observe(ctx, s.store.Client(), store.LeaderPrefix)
	if err != nil || name == s.cfg.ReplicaName {
		return status.Error(codes.Unavailable, "this control plane is not the leader (no leader elected yet); retry")
	}
	return status.Errorf(codes.Unavailable, "this control plane (%s) is not the leader; the leader is %s", s.cfg.ReplicaName, name)
}
