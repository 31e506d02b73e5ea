package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/controlplane/auth"
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
		n.Status = nil // output only: kept under its own key (fleet.go)
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
		if ok && len(n.GetHostKeys()) == 0 && n.GetAddress() == old.GetAddress() {
			// An inventory file usually knows no host keys; keys pinned
			// with TrustNodeHostKey stay until the node moves.
			n.HostKeys = old.GetHostKeys()
		}
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
				return c.withStatus(ctx, resp)
			}
		}
		if next == "" {
			return c.withStatus(ctx, resp)
		}
		after = next
	}
	// Give the client what was found and a way to continue.
	if l := len(resp.Nodes); l > 0 {
		resp.NextPageToken = encodeToken("nodes", resp.Nodes[l-1].GetId())
	}
	return c.withStatus(ctx, resp)
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
	if err := c.s.withStatus(ctx, []*outpostv1.Node{n}); err != nil {
		return nil, internal(err)
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

// Host key pinning. A scan's result is kept for scanTTL at
// store.HostKeyScanKey: TrustNodeHostKey pins only a key the node
// presented recently, and only when the caller names its fingerprint,
// which they compared out of band.
const (
	// scanTTL is how long a scan may be trusted after it was made.
	scanTTL = time.Hour
	// scanTimeout bounds one scan: the gateway's dial and handshake.
	scanTimeout = 30 * time.Second
	// trustAttempts bounds TrustNodeHostKey's compare-and-swap retries.
	trustAttempts = 10
)

// ScanNodeHostKey has a gateway of the node's datacenter read the host
// key the node presents and remembers it as the node's last scan.
func (c *controlPlaneService) ScanNodeHostKey(ctx context.Context, req *outpostv1.ScanNodeHostKeyRequest) (*outpostv1.ScanNodeHostKeyResponse, error) {
	s := c.s
	if err := store.CheckID(req.GetId()); err != nil {
		return nil, fieldError("id", "%v", err)
	}
	node := &outpostv1.Node{}
	found, _, err := s.store.Get(ctx, store.NodeKey(req.GetId()), node)
	if err != nil {
		return nil, internal(err)
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "node %s not found", req.GetId())
	}
	sctx, cancel := context.WithTimeout(ctx, scanTimeout)
	defer cancel()
	res, gw, err := s.scans.scan(sctx, node)
	switch {
	case errors.Is(err, errNoScanGateway):
		if s.leaderEngine() == nil {
			// Gateways hold their streams to the leader.
			return nil, s.notLeader(ctx)
		}
		return nil, status.Errorf(codes.Unavailable, "no gateway of datacenter %s is connected to scan node %s; start one (outpost gateway --join-token ...)", node.GetDatacenter(), node.GetId())
	case err != nil:
		return nil, err
	case res.GetError() != "":
		return nil, status.Errorf(codes.FailedPrecondition, "gateway %s could not read the host key of node %s at %s: %s", gw, node.GetId(), node.GetAddress(), res.GetError())
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(res.GetAuthorizedKey()))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "gateway %s sent an unreadable host key for node %s: %v", gw, node.GetId(), err)
	}
	if _, isCert := key.(*ssh.Certificate); isCert {
		return nil, status.Errorf(codes.Internal, "gateway %s sent a host certificate for node %s; pin keys, and trust host CAs in the gateway's known_hosts", gw, node.GetId())
	}
	scan := &outpostv1.NodeHostKeyScan{
		NodeId:        node.GetId(),
		Address:       node.GetAddress(),
		Gateway:       gw,
		KeyType:       key.Type(),
		Fingerprint:   ssh.FingerprintSHA256(key),
		AuthorizedKey: authorizedKeyLine(key),
		ScanTime:      timestamppb.New(time.Now()),
		Pinned:        pinned(node, key),
	}
	if err := s.store.PutLeased(ctx, store.HostKeyScanKey(node.GetId()), scan, scanTTL); err != nil {
		return nil, internal(err)
	}
	s.log.Info("node host key scanned", "node", node.GetId(), "address", node.GetAddress(), "gateway", gw,
		"key_type", scan.GetKeyType(), "fingerprint", scan.GetFingerprint(), "pinned", scan.GetPinned())
	return &outpostv1.ScanNodeHostKeyResponse{Scan: scan}, nil
}

// TrustNodeHostKey pins the node's last scanned key if its fingerprint is
// the one the caller gives.
func (c *controlPlaneService) TrustNodeHostKey(ctx context.Context, req *outpostv1.TrustNodeHostKeyRequest) (*outpostv1.TrustNodeHostKeyResponse, error) {
	s := c.s
	if err := store.CheckID(req.GetId()); err != nil {
		return nil, fieldError("id", "%v", err)
	}
	want := strings.TrimSpace(req.GetFingerprint())
	if !strings.HasPrefix(want, "SHA256:") || len(want) == len("SHA256:") {
		return nil, fieldError("fingerprint", "required: the SHA256:... fingerprint that outpost node scan %s printed", req.GetId())
	}
	for range trustAttempts {
		node := &outpostv1.Node{}
		found, rev, err := s.store.Get(ctx, store.NodeKey(req.GetId()), node)
		if err != nil {
			return nil, internal(err)
		}
		if !found {
			return nil, status.Errorf(codes.NotFound, "node %s not found", req.GetId())
		}
		scan := &outpostv1.NodeHostKeyScan{}
		found, _, err = s.store.Get(ctx, store.HostKeyScanKey(req.GetId()), scan)
		if err != nil {
			return nil, internal(err)
		}
		switch {
		case !found:
			return nil, status.Errorf(codes.FailedPrecondition, "node %s has no host key scan from the last %v: run outpost node scan %s, compare the fingerprint out of band, then trust it", req.GetId(), scanTTL, req.GetId())
		case scan.GetAddress() != node.GetAddress():
			return nil, status.Errorf(codes.FailedPrecondition, "node %s moved from %s to %s since it was scanned: scan it again", req.GetId(), scan.GetAddress(), node.GetAddress())
		case scan.GetFingerprint() != want:
			st := status.Newf(codes.FailedPrecondition, "fingerprint %s does not match the key node %s presented when scanned (%s %s, by gateway %s at %s); nothing was pinned",
				want, req.GetId(), scan.GetKeyType(), scan.GetFingerprint(), scan.GetGateway(), scan.GetScanTime().AsTime().UTC().Format(time.RFC3339))
			if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: ReasonHostKeyMismatch, Domain: errorDomain}); err == nil {
				st = d
			}
			return nil, st.Err()
		}
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(scan.GetAuthorizedKey()))
		if err != nil {
			return nil, internal(fmt.Errorf("stored scan of node %s: %w", req.GetId(), err))
		}
		if pinned(node, key) {
			return &outpostv1.TrustNodeHostKeyResponse{Node: node}, nil
		}
		// A host has one key per type: the scanned key replaces a pinned
		// key of its type (a re-keyed host) and joins keys of other types.
		var keys []string
		for _, line := range node.GetHostKeys() {
			if k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err == nil && k.Type() == key.Type() {
				continue
			}
			keys = append(keys, line)
		}
		node.HostKeys = append(keys, scan.GetAuthorizedKey())
		op, err := store.OpPut(store.NodeKey(node.GetId()), node)
		if err != nil {
			return nil, internal(err)
		}
		err = s.store.TxnIf(ctx, nil, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(store.NodeKey(node.GetId())), "=", rev)}, op)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, internal(err)
		}
		by := "unknown"
		if id, ok := auth.FromContext(ctx); ok {
			by = id.Subject()
		}
		s.log.Info("node host key pinned", "node", node.GetId(), "key_type", key.Type(), "fingerprint", want, "by", by)
		return &outpostv1.TrustNodeHostKeyResponse{Node: node}, nil
	}
	return nil, status.Errorf(codes.Aborted, "node %s changed concurrently too often; retry", req.GetId())
}

// pinned reports whether node pins key.
func pinned(node *outpostv1.Node, key ssh.PublicKey) bool {
	for _, line := range node.GetHostKeys() {
		if k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err == nil && bytes.Equal(k.Marshal(), key.Marshal()) {
			return true
		}
	}
	return false
}

// authorizedKeyLine is key as Node.host_keys holds it: type and base64,
// no comment.
func authorizedKeyLine(key ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
}
