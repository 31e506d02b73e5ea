package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/controlplane/auth"
	"github.com/outposthq/outpost/internal/pki"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Host key scans: the control plane never connects to a node, so
// ScanNodeHostKey asks a gateway of the node's datacenter, over the
// ServeHostKeyScans stream that every gateway holds open, to read the key
// the node presents. The hub matches scans to streams and results to the
// scans that asked; a stream answers only the scans sent on it.

// scanQueue bounds the scans waiting to be sent on one stream.
const scanQueue = 16

// errNoScanGateway reports that no gateway of the datacenter holds a scan
// stream to this replica.
var errNoScanGateway = errors.New("no gateway of the datacenter is connected")

// scanHub tracks the gateways' scan streams and the scans in flight.
type scanHub struct {
	mu      sync.Mutex
	byDC    map[string][]*scanStream // guarded by mu: open streams by datacenter, oldest first
	pending map[string]*pendingScan  // guarded by mu: scans sent and not answered, by id
}

// scanStream is one gateway's open ServeHostKeyScans stream.
type scanStream struct {
	gateway, dc string
	send        chan *outpostv1.ServeHostKeyScansResponse // drained by the stream's handler
	done        chan struct{}                             // closed when the stream ends
}

type pendingScan struct {
	stream *scanStream
	result chan *outpostv1.ServeHostKeyScansRequest // buffered 1
}

func newScanHub() *scanHub {
	return &scanHub{byDC: map[string][]*scanStream{}, pending: map[string]*pendingScan{}}
}

func (h *scanHub) register(gateway, dc string) *scanStream {
	st := &scanStream{gateway: gateway, dc: dc, send: make(chan *outpostv1.ServeHostKeyScansResponse, scanQueue), done: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byDC[dc] = append(h.byDC[dc], st)
	return st
}

func (h *scanHub) unregister(st *scanStream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.byDC[st.dc]
	for i, s := range list {
		if s == st {
			h.byDC[st.dc] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(h.byDC[st.dc]) == 0 {
		delete(h.byDC, st.dc)
	}
	close(st.done)
}

// connected reports whether a gateway of dc holds a stream to this replica.
func (h *scanHub) connected(dc string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byDC[dc]) > 0
}

// deliver hands a gateway's answer to the scan that asked, if that scan
// was sent on st.
func (h *scanHub) deliver(st *scanStream, res *outpostv1.ServeHostKeyScansRequest) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.pending[res.GetScanId()]
	if p == nil || p.stream != st {
		return false
	}
	delete(h.pending, res.GetScanId())
	p.result <- res
	return true
}

// scan asks a gateway of node's datacenter to read the node's host key and
// waits for its answer, bounded by ctx. It returns the answer and the
// gateway's name.
func (h *scanHub) scan(ctx context.Context, node *outpostv1.Node) (*outpostv1.ServeHostKeyScansRequest, string, error) {
	return h.request(ctx, &outpostv1.ServeHostKeyScansResponse{Node: node})
}

// request sends req (its scan_id set here) to a gateway of its node's
// datacenter: a host key scan, or an observation (fleet.go).
func (h *scanHub) request(ctx context.Context, req *outpostv1.ServeHostKeyScansResponse) (*outpostv1.ServeHostKeyScansRequest, string, error) {
	node := req.GetNode()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, "", err
	}
	id := "scan-" + hex.EncodeToString(b[:])
	p := &pendingScan{result: make(chan *outpostv1.ServeHostKeyScansRequest, 1)}
	h.mu.Lock()
	list := h.byDC[node.GetDatacenter()]
	if len(list) == 0 {
		h.mu.Unlock()
		return nil, "", errNoScanGateway
	}
	// The newest stream: an older one of the same gateway may be a dead
	// connection not yet noticed.
	p.stream = list[len(list)-1]
	select {
	case p.stream.send <- withScanID(req, id):
	default:
		h.mu.Unlock()
		return nil, "", status.Errorf(codes.ResourceExhausted, "gateway %s has %d host key scans queued; retry later", p.stream.gateway, scanQueue)
	}
	h.pending[id] = p
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.pending, id)
		h.mu.Unlock()
	}()
	select {
	case res := <-p.result:
		return res, p.stream.gateway, nil
	case <-p.stream.done:
		return nil, p.stream.gateway, status.Errorf(codes.Unavailable, "gateway %s disconnected during the scan; retry", p.stream.gateway)
	case <-ctx.Done():
		return nil, p.stream.gateway, status.Errorf(codes.DeadlineExceeded, "gateway %s did not answer the scan in time", p.stream.gateway)
	}
}

func withScanID(req *outpostv1.ServeHostKeyScansResponse, id string) *outpostv1.ServeHostKeyScansResponse {
	req = proto.CloneOf(req)
	req.ScanId = id
	return req
}

// ServeHostKeyScans holds a gateway's scan stream: scans for nodes of the
// datacenter in its certificate go out, results come back.
func (g *gatewayService) ServeHostKeyScans(stream grpc.BidiStreamingServer[outpostv1.ServeHostKeyScansRequest, outpostv1.ServeHostKeyScansResponse]) error {
	ctx := stream.Context()
	id, ok := auth.FromContext(ctx)
	if !ok || id.Kind != pki.KindGateway {
		return status.Error(codes.PermissionDenied, "only a gateway certificate may serve host key scans")
	}
	hub := g.s.scans
	st := hub.register(id.Name, id.Datacenter)
	defer hub.unregister(st)
	g.s.log.Debug("gateway serves host key scans", "gateway", id.Name, "datacenter", id.Datacenter)

	// Recv ends when this handler returns (gRPC cancels the stream).
	recvErr := make(chan error, 1)
	go func() {
		for {
			res, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if !hub.deliver(st, res) {
				g.s.log.Debug("host key scan result for no waiting scan", "gateway", id.Name, "scan_id", res.GetScanId())
			}
		}
	}()
	for {
		select {
		case m := <-st.send:
			if err := stream.Send(m); err != nil {
				return err
			}
		case err := <-recvErr:
			if status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) {
				return nil
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-g.s.quit:
			return status.Error(codes.Unavailable, "control plane is shutting down")
		case <-ctx.Done():
			return nil
		}
	}
}
