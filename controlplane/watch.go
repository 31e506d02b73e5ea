package controlplane

import (
	"context"
	"errors"

	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/controlplane/watchhub"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// WatchRollout streams a snapshot, then changes, from this replica's
// shared copy of the rollout (controlplane/watchhub): one etcd read and
// one etcd watch per watched rollout, however many watch it. Any replica
// serves it, and a client that resumes from the last revision it saw
// misses nothing. It ends once the rollout is terminal and that change
// was sent. Step events come from this replica's engine (live only, when
// this replica leads).
func (c *controlPlaneService) WatchRollout(req *outpostv1.WatchRolloutRequest, stream grpc.ServerStreamingServer[outpostv1.WatchRolloutResponse]) error {
	s := c.s
	id := req.GetId()
	if err := checkRolloutID("id", id); err != nil {
		return err
	}
	if req.GetFromRevision() < 0 {
		return fieldError("from_revision", "must not be negative")
	}
	if req.GetNodePageSize() < 0 {
		return fieldError("node_page_size", "must not be negative")
	}
	ctx := stream.Context()
	w, err := s.watches.Join(callerSubject(ctx), id, req.GetFromRevision(), int(req.GetNodePageSize()))
	if err != nil {
		return s.watchStatus(id, err)
	}
	defer w.Leave()
	events, unsubscribe := s.events.subscribe(id, req.GetFromRevision() == 0)
	defer unsubscribe()

	last := req.GetFromRevision()
	for {
		select {
		case <-s.quit:
			// GracefulStop waits for streams; end this one.
			return status.Error(codes.Unavailable, "control plane is shutting down; resume from the last revision")
		default:
		}
		resps, end, err := w.Take()
		if err != nil {
			return s.watchStatus(id, err)
		}
		for _, m := range resps {
			if err := stream.Send(m); err != nil {
				return err
			}
			last = m.GetRevision()
		}
		if end {
			return nil
		}
		if len(resps) > 0 {
			continue
		}
		var steps <-chan *outpostv1.NodeStepEvent
		if w.Live() {
			steps = events
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.quit:
			return status.Error(codes.Unavailable, "control plane is shutting down; resume from the last revision")
		case ev := <-steps:
			if err := stream.Send(&outpostv1.WatchRolloutResponse{Revision: last, Event: &outpostv1.WatchRolloutResponse_StepEvent{StepEvent: ev}}); err != nil {
				return err
			}
		case <-w.Ready():
		}
	}
}

// callerSubject names the caller for the watch caps: the authenticated
// identity's subject ("user/alice"), or "anonymous".
func callerSubject(ctx context.Context) string {
	if id, ok := auth.FromContext(ctx); ok && id.Name != "" {
		return id.Subject()
	}
	return anonymous
}

// watchStatus turns a watch hub error into the call's status.
func (s *Server) watchStatus(id string, err error) error {
	var capErr *watchhub.CapError
	switch {
	case errors.As(err, &capErr) && capErr.Caller != "":
		return status.Errorf(codes.ResourceExhausted,
			"too many rollout watches: %s holds %d, the most per caller (control plane flag --max-watchers-per-caller); end one first", capErr.Caller, capErr.Limit)
	case errors.As(err, &capErr):
		return status.Errorf(codes.ResourceExhausted,
			"too many rollout watches: this control plane serves at most %d at once (control plane flag --max-watchers); retry later", capErr.Limit)
	case errors.Is(err, watchhub.ErrNotFound):
		return status.Errorf(codes.NotFound, "rollout %s not found", id)
	case errors.Is(err, watchhub.ErrClosed):
		return status.Error(codes.Unavailable, "control plane is shutting down; resume from the last revision")
	case errors.Is(err, watchhub.ErrWatchEnded):
		return status.Errorf(codes.Unavailable, "%v; resume from the last revision", err)
	}
	select {
	case <-s.quit:
		return status.Error(codes.Unavailable, "control plane is shutting down; resume from the last revision")
	default:
	}
	return internal(err)
}
