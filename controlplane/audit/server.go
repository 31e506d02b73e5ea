package audit

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/controlplane/store"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Server serves outpost.v1.AuditService from a Log. Any replica serves it.
type Server struct {
	outpostv1.UnimplementedAuditServiceServer
	log *Log

	stopOnce sync.Once
	quit     chan struct{} // closed by Stop: watches end
}

var _ outpostv1.AuditServiceServer = (*Server)(nil)

// NewServer returns the AuditService over l.
func NewServer(l *Log) *Server {
	return &Server{log: l, quit: make(chan struct{})}
}

// Stop ends every open WatchAuditEntries stream with UNAVAILABLE (clients
// resume against another replica) and refuses new ones. Call it before
// grpc.Server.GracefulStop, which waits for streams to end.
func (s *Server) Stop() {
	s.stopOnce.Do(func() { close(s.quit) })
}

// ListAuditEntries lists entries oldest first.
func (s *Server) ListAuditEntries(ctx context.Context, req *outpostv1.ListAuditEntriesRequest) (*outpostv1.ListAuditEntriesResponse, error) {
	q, err := query(req.GetRolloutId(), req.GetSince(), 0)
	if err != nil {
		return nil, err
	}
	if req.GetPageSize() < 0 {
		return nil, status.Error(codes.InvalidArgument, "page_size: must not be negative")
	}
	entries, next, err := s.log.List(ctx, q, int(req.GetPageSize()), req.GetPageToken())
	switch {
	case errors.Is(err, ErrBadPageToken):
		return nil, status.Error(codes.InvalidArgument, "page_token: not a token of ListAuditEntries")
	case err != nil:
		return nil, storeStatus(ctx, err)
	}
	return &outpostv1.ListAuditEntriesResponse{Entries: entries, NextPageToken: next}, nil
}

// ListAuditCheckpoints lists the hash chain's signed checkpoints, oldest
// first.
func (s *Server) ListAuditCheckpoints(ctx context.Context, req *outpostv1.ListAuditCheckpointsRequest) (*outpostv1.ListAuditCheckpointsResponse, error) {
	if req.GetPageSize() < 0 {
		return nil, status.Error(codes.InvalidArgument, "page_size: must not be negative")
	}
	cps, next, err := s.log.ListCheckpoints(ctx, int(req.GetPageSize()), req.GetPageToken())
	switch {
	case errors.Is(err, ErrBadPageToken):
		return nil, status.Error(codes.InvalidArgument, "page_token: not a token of ListAuditCheckpoints")
	case err != nil:
		return nil, storeStatus(ctx, err)
	}
	return &outpostv1.ListAuditCheckpointsResponse{Checkpoints: cps, NextPageToken: next}, nil
}

// WatchAuditEntries streams stored then new entries until the client
// cancels or the server stops.
func (s *Server) WatchAuditEntries(req *outpostv1.WatchAuditEntriesRequest, stream grpc.ServerStreamingServer[outpostv1.WatchAuditEntriesResponse]) error {
	q, err := query(req.GetRolloutId(), req.GetSince(), req.GetAfterSequence())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-s.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer func() {
		cancel()
		<-stopped
	}()
	err = s.log.Watch(ctx, q, func(e *outpostv1.AuditEntry) error {
		return stream.Send(&outpostv1.WatchAuditEntriesResponse{Entry: e})
	})
	select {
	case <-s.quit:
		return status.Error(codes.Unavailable, "control plane shutting down; resume the watch with since and after_sequence")
	default:
	}
	if err == nil || errors.Is(err, context.Canceled) {
		return status.FromContextError(stream.Context().Err()).Err()
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return storeStatus(ctx, err)
}

// query validates the request fields shared by List and Watch.
func query(rolloutID string, since *timestamppb.Timestamp, after int64) (Query, error) {
	var q Query
	if rolloutID != "" {
		if err := store.CheckID(rolloutID); err != nil {
			return q, status.Errorf(codes.InvalidArgument, "rollout_id: %v", err)
		}
		q.RolloutID = rolloutID
	}
	if after < 0 {
		return q, status.Error(codes.InvalidArgument, "after_sequence: must not be negative")
	}
	q.AfterSequence = after
	if since != nil {
		if err := since.CheckValid(); err != nil {
			return q, status.Errorf(codes.InvalidArgument, "since: %v", err)
		}
		q.Since = since.AsTime()
	}
	return q, nil
}

// storeStatus turns an etcd failure into a status the client retries.
func storeStatus(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Errorf(codes.Unavailable, "reading the audit log: %v", err)
}
