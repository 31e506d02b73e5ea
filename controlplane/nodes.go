package controlplane

import (
	"context"
	"fmt"
	"strings"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/plan"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// controlPlaneService implements outpostv1.ControlPlaneService.
type controlPlaneService struct {
	outpostv1.UnimplementedControlPlaneServiceServer
	s *Server
}

// Page sizes of the List calls (defaults and maxima, as the API documents).
const (
	defaultNodesPage        = 100
	maxNodesPage            = 1000
	defaultRolloutsPage     = 50
	maxRolloutsPage         = 1000
	defaultRolloutNodesPage = 500
	maxRolloutNodesPage     = 5000
	// maxScanPages bounds how many store pages one filtered List call
	// reads, so a selective filter over a huge inventory cannot run away.
	maxScanPages = 1000
)

// ApplyNodes validates the nodes as an inventory would be (plan.CheckNodes)
// and writes those that are new or changed.
func (c *controlPlaneService) ApplyNodes(ctx context.Context, req *outpostv1.ApplyNodesRequest) (*outpostv1.ApplyNodesResponse, error) {
	if len(req.GetNodes()) == 0 {
		return nil, fieldError("nodes", "required: at least one node")
	}
	nodes := make([]*outpostv1.Node, len(req.GetNodes()))
	for i, n := range req.GetNodes() {
		n = proto.CloneOf(n)
		if a, err := plan.NormalizeAddress(n.GetAddress()); err == nil {
			n.Address = a
		}
		nodes[i] = n
	}
	if err := plan.CheckNodes(nodes); err != nil {
		return nil, planStatus(err, "")
	}
	existing, err := c.s.allNodes(ctx)
	if err != nil {
		return nil, internal(err)
	}
	resp := &outpostv1.ApplyNodesResponse{Nodes: nodes}
	var ops []clientv3.Op
	for _, n := range nodes {
		old, ok := existing[n.GetId()]
		switch {
		case !ok:
			resp.Created++
		case proto.Equal(old, n):
			resp.Unchanged++
			continue
		default:
			resp.Updated++
		}
		op, err := store.OpPut(store.NodeKey(n.GetId()), n)
		if err != nil {
			return nil, internal(err)
		}
		ops = append(ops, op)
	}
	if len(ops) > 0 {
		if err := c.s.store.Txn(ctx, nil, ops...); err != nil {
			return nil, internal(err)
		}
	}
	c.s.log.Info("nodes applied", "created", resp.Created, "updated", resp.Updated, "unchanged", resp.Unchanged)
	return resp, nil
}

// allNodes reads the whole inventory by id.
func (s *Server) allNodes(ctx context.Context) (map[string]*outpostv1.Node, error) {
	out := map[string]*outpostv1.Node{}
	after := ""
	for range maxScanPages * 100 {
		next, err := s.store.List(ctx, store.NodesPrefix, 0, after, func(_ string, v []byte) error {
			n := &outpostv1.Node{}
			if err := proto.Unmarshal(v, n); err != nil {
				return err
			}
			out[n.GetId()] = n
			return nil
		})
		if err != nil {
			return nil, err
		}
		if next == "" {
			return out, nil
		}
		after = next
	}
	return nil, fmt.Errorf("inventory too large to read")
}

// ListNodes lists nodes sorted by id, filtered by labels and datacenter.
func (c *controlPlaneService) ListNodes(ctx context.Context, req *outpostv1.ListNodesRequest) (*outpostv1.ListNodesResponse, error) {
	sel, err := plan.ParseLabelSelector(req.GetLabelSelector())
	if err != nil {
		return nil, fieldError("label_selector", "%v", err)
	}
	after, ok := decodeToken("nodes", req.GetPageToken())
	if !ok {
		return nil, fieldError("page_token", "not a token returned by ListNodes")
	}
	if after != "" {
		after = store.NodeKey(after)
	}
	size := pageSize(req.GetPageSize(), defaultNodesPage, maxNodesPage)
	resp := &outpostv1.ListNodesResponse{}
	for range maxScanPages {
		var page []*outpostv1.Node
		next, err := c.s.store.List(ctx, store.NodesPrefix, int64(size), after, func(_ string, v []byte) error {
			n := &outpostv1.Node{}
			if err := proto.Unmarshal(v, n); err != nil {
				return err
			}
			page = append(page, n)
			return nil
		})
		if err != nil {
			return nil, internal(err)
		}
		for i, n := range page {
			if dc := req.GetDatacenter(); dc != "" && n.GetDatacenter() != dc {
				continue
			}
			if !plan.MatchSelector(sel, n.GetLabels()) {
				continue
			}
			resp.Nodes = append(resp.Nodes, n)
			if len(resp.Nodes) == size {
				if i < len(page)-1 || next != "" {
					resp.NextPageToken = encodeToken("nodes", n.GetId())
				}
				return resp, nil
			}
		}
		if next == "" {
			return resp, nil
		}
		after = next
	}
	// Give the client what was found and a way to continue.
	if l := len(resp.Nodes); l > 0 {
		resp.NextPageToken = encodeToken("nodes", resp.Nodes[l-1].GetId())
	}
	return resp, nil
}

// GetNode returns one node.
func (c *controlPlaneService) GetNode(ctx context.Context, req *outpostv1.GetNodeRequest) (*outpostv1.GetNodeResponse, error) {
	if err := store.CheckID(req.GetId()); err != nil {
		return nil, fieldError("id", "%v", err)
	}
	n := &outpostv1.Node{}
	found, _, err := c.s.store.Get(ctx, store.NodeKey(req.GetId()), n)
	if err != nil {
		return nil, internal(err)
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "node %s not found", req.GetId())
	}
	return &outpostv1.GetNodeResponse{Node: n}, nil
}

// DeleteNode removes a node from the inventory. Rollouts that already
// selected it fail the node when they reach it.
func (c *controlPlaneService) DeleteNode(ctx context.Context, req *outpostv1.DeleteNodeRequest) (*outpostv1.DeleteNodeResponse, error) {
	if err := store.CheckID(req.GetId()); err != nil {
		return nil, fieldError("id", "%v", err)
	}
	deleted, err := c.s.store.Delete(ctx, store.NodeKey(req.GetId()))
	if err != nil {
		return nil, internal(err)
	}
	if !deleted {
		return nil, status.Errorf(codes.NotFound, "node %s not found", req.GetId())
	}
	c.s.log.Info("node deleted", "node", req.GetId())
	return &outpostv1.DeleteNodeResponse{}, nil
}

// checkRolloutID validates a rollout id from a request.
func checkRolloutID(field, id string) error {
	if err := store.CheckID(id); err != nil {
		return fieldError(field, "%v", err)
	}
	if strings.TrimSpace(id) != id {
		return fieldError(field, "%q has surrounding spaces", id)
	}
	return nil
}
