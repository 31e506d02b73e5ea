package controlplane

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// snapshotPage is how many node records one snapshot read fetches.
const snapshotPage = 1000

// errHistoryGone means the watch's start revision was compacted away.
var errHistoryGone = errors.New("watch history compacted")

// maxResnapshots bounds how often one WatchRollout call starts over with
// a snapshot because etcd compacted the history it was reading.
const maxResnapshots = 10

// WatchRollout streams a snapshot, then changes read from an etcd watch on
// the rollout's keys, so any replica serves it and a client that resumes
// from the last revision it saw misses nothing. It ends once the rollout
// is terminal and that change was sent. Step events come from this
// replica's engine (live only, when this replica leads).
func (c *controlPlaneService) WatchRollout(req *outpostv1.WatchRolloutRequest, stream grpc.ServerStreamingServer[outpostv1.WatchRolloutResponse]) error {
	s := c.s
	id := req.GetId()
	if err := checkRolloutID("id", id); err != nil {
		return err
	}
	if req.GetFromRevision() < 0 {
		return fieldError("from_revision", "must not be negative")
	}
	ctx := stream.Context()

	events, unsubscribe := s.events.subscribe(id, req.GetFromRevision() == 0)
	defer unsubscribe()

	from := req.GetFromRevision()
	for range maxResnapshots {
		var last int64
		if from == 0 {
			rev, done, err := s.sendSnapshot(ctx, stream, id)
			if err != nil {
				return s.watchStatus(err)
			}
			if done {
				return nil
			}
			last = rev
		} else {
			r := &outpostv1.Rollout{}
			found, modRev, err := s.store.Get(ctx, store.RolloutKey(id), r)
			if err != nil {
				return s.watchStatus(err)
			}
			if !found {
				return status.Errorf(codes.NotFound, "rollout %s not found", id)
			}
			if rolloutstate.Terminal(r.GetState()) && modRev <= from {
				return nil // the client has seen the end already
			}
			last = from
		}
		err := s.streamChanges(ctx, stream, id, last, events)
		if errors.Is(err, errHistoryGone) {
			from = 0
			continue
		}
		return s.watchStatus(err)
	}
	return status.Error(codes.Unavailable, "watch history keeps being compacted; retry")
}

func (s *Server) watchStatus(err error) error {
	if err == nil {
		return nil
	}
	select {
	case <-s.quit:
		return status.Error(codes.Unavailable, "control plane is shutting down")
	default:
	}
	return internal(err)
}

// sendSnapshot sends the rollout and all its nodes as of one revision,
// then snapshot_end. It returns that revision and whether the rollout is
// already terminal.
func (s *Server) sendSnapshot(ctx context.Context, stream grpc.ServerStreamingServer[outpostv1.WatchRolloutResponse], id string) (int64, bool, error) {
	cli := s.store.Client()
	resp, err := cli.Get(ctx, store.RolloutKey(id))
	if err != nil {
		return 0, false, fmt.Errorf("read rollout %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, false, status.Errorf(codes.NotFound, "rollout %s not found", id)
	}
	rev := resp.Header.Revision
	r := &outpostv1.Rollout{}
	if err := proto.Unmarshal(resp.Kvs[0].Value, r); err != nil {
		return 0, false, fmt.Errorf("decode rollout %s: %w", id, err)
	}
	if err := stream.Send(&outpostv1.WatchRolloutResponse{Revision: rev, Event: &outpostv1.WatchRolloutResponse_Rollout{Rollout: r}}); err != nil {
		return 0, false, err
	}
	prefix := store.RolloutNodesPrefix(id)
	end := clientv3.GetPrefixRangeEnd(prefix)
	start := prefix
	for range maxScanPages * 100 {
		page, err := cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithRev(rev), clientv3.WithLimit(snapshotPage))
		if err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return 0, false, errHistoryGone
			}
			return 0, false, fmt.Errorf("read nodes of %s: %w", id, err)
		}
		for _, kv := range page.Kvs {
			n := &outpostv1.RolloutNode{}
			if err := proto.Unmarshal(kv.Value, n); err != nil {
				return 0, false, fmt.Errorf("decode %s: %w", kv.Key, err)
			}
			if err := stream.Send(&outpostv1.WatchRolloutResponse{Revision: rev, Event: &outpostv1.WatchRolloutResponse_Node{Node: n}}); err != nil {
				return 0, false, err
			}
		}
		if !page.More || len(page.Kvs) == 0 {
			break
		}
		start = string(page.Kvs[len(page.Kvs)-1].Key) + "\x00"
	}
	if err := stream.Send(&outpostv1.WatchRolloutResponse{Revision: rev, Event: &outpostv1.WatchRolloutResponse_SnapshotEnd{SnapshotEnd: &outpostv1.WatchSnapshotEnd{}}}); err != nil {
		return 0, false, err
	}
	return rev, rolloutstate.Terminal(r.GetState()), nil
}

// streamChanges sends every change to the rollout's keys after revision
// last, and step events as they come, until the rollout is terminal.
func (s *Server) streamChanges(ctx context.Context, stream grpc.ServerStreamingServer[outpostv1.WatchRolloutResponse], id string, last int64, events <-chan *outpostv1.NodeStepEvent) error {
	rkey := store.RolloutKey(id)
	nodesPrefix := store.RolloutNodesPrefix(id)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The prefix also matches longer rollout ids; keys are filtered below.
	watch := s.store.Watch(wctx, rkey, last+1)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.quit:
			// GracefulStop waits for streams; end this one.
			return status.Error(codes.Unavailable, "control plane is shutting down; resume from the last revision")
		case ev := <-events:
			if err := stream.Send(&outpostv1.WatchRolloutResponse{Revision: last, Event: &outpostv1.WatchRolloutResponse_StepEvent{StepEvent: ev}}); err != nil {
				return err
			}
		case wr, ok := <-watch:
			if !ok {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return status.Error(codes.Unavailable, "watch ended; resume from the last revision")
			}
			if wr.CompactRevision != 0 || errors.Is(wr.Err(), rpctypes.ErrCompacted) {
				return errHistoryGone
			}
			if err := wr.Err(); err != nil {
				return status.Errorf(codes.Unavailable, "watch: %v; resume from the last revision", err)
			}
			for _, ev := range wr.Events {
				key := string(ev.Kv.Key)
				rev := ev.Kv.ModRevision
				switch {
				case key == rkey:
					if ev.Type == clientv3.EventTypeDelete {
						return status.Errorf(codes.NotFound, "rollout %s was deleted", id)
					}
					r := &outpostv1.Rollout{}
					if err := proto.Unmarshal(ev.Kv.Value, r); err != nil {
						return fmt.Errorf("decode rollout %s: %w", id, err)
					}
					if err := stream.Send(&outpostv1.WatchRolloutResponse{Revision: rev, Event: &outpostv1.WatchRolloutResponse_Rollout{Rollout: r}}); err != nil {
						return err
					}
					last = rev
					if rolloutstate.Terminal(r.GetState()) {
						return nil
					}
				case strings.HasPrefix(key, nodesPrefix) && ev.Type == clientv3.EventTypePut:
					n := &outpostv1.RolloutNode{}
					if err := proto.Unmarshal(ev.Kv.Value, n); err != nil {
						return fmt.Errorf("decode %s: %w", key, err)
					}
					if err := stream.Send(&outpostv1.WatchRolloutResponse{Revision: rev, Event: &outpostv1.WatchRolloutResponse_Node{Node: n}}); err != nil {
						return err
					}
					last = rev
				}
			}
		}
	}
}
