package rollout

import (
	"context"
	"io"
	"sort"
	"time"

	"github.com/outposthq/outpost/controlplane/gatewaylink"
	"github.com/outposthq/outpost/controlplane/store"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Link is what the engine needs of one gateway's Connect stream: send it
// an assignment, a cancel or a sequence ack, and end it.
// gatewaylink.Session implements it; the engine holds no stream. Every
// method returns at once: the engine's loop calls them.
type Link interface {
	Assign(*outpostv1.Assignment)
	Cancel(assignmentID, reason string)
	Ack(sequence uint64)
	Close(err error)
}

var _ Link = (*gatewaylink.Session)(nil)

// Reasons a gateway session ends, for the API to turn into status codes;
// gatewaylink defines them.
var (
	// ErrReplaced: a newer stream of the same gateway took over.
	ErrReplaced = gatewaylink.ErrReplaced
	// ErrLeadershipEnded: this replica stopped leading; reconnect (to the leader).
	ErrLeadershipEnded = gatewaylink.ErrLeadershipEnded
	// ErrHeartbeatTimeout: the gateway sent nothing for three heartbeat intervals.
	ErrHeartbeatTimeout = gatewaylink.ErrHeartbeatTimeout
)

// GatewayStream is the part of the Connect stream the engine uses.
type GatewayStream = gatewaylink.Stream

// session is the engine's record of one gateway's current stream, owned
// by the loop: what runs there and how much more it takes.
type session struct {
	name     string
	dc       string
	capacity int
	link     Link
	version  string    // as the gateway reported it in its hello
	since    time.Time // when this stream was registered

	active       map[string]*nodeRun // assignments outstanding, by id
	checks       map[string]*check   // bake health checks outstanding, by id
	refusedUntil time.Time
}

func newSession(h *outpostv1.GatewayHello, defaultCapacity int, link Link) *session {
	c := int(h.GetCapacity())
	if c <= 0 {
		c = defaultCapacity
	}
	return &session{
		name:     h.GetName(),
		dc:       h.GetDatacenter(),
		capacity: c,
		link:     link,
		version:  h.GetVersion(),
		active:   map[string]*nodeRun{},
		checks:   map[string]*check{},
	}
}

// ServeGateway runs one gateway's Connect stream after its hello: it
// registers the gateway, then gatewaylink serves the stream (welcome,
// assignments, acks, heartbeats) while the loop applies what the gateway
// reports. It returns when the stream ends, the gateway is replaced by a
// newer stream, heartbeats stop, or the engine stops (ErrStopped,
// ErrLeadershipEnded). io.EOF from the gateway returns nil.
func (e *Engine) ServeGateway(stream GatewayStream, hello *outpostv1.GatewayHello) error {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return ErrStopped
	}
	e.handlers.Add(1)
	e.mu.Unlock()
	defer e.handlers.Done()

	ctx := stream.Context()
	link := gatewaylink.New()
	s := newSession(hello, e.cfg.DefaultCapacity, link)
	s.since = e.cfg.Clock.Now()
	var welcome *outpostv1.GatewayWelcome
	if err := e.do(ctx, func(lctx context.Context) { welcome = e.register(lctx, s, hello) }); err != nil {
		return err
	}
	defer func() {
		select {
		case e.reqs <- func(lctx context.Context) { e.detach(lctx, s, nil) }:
		case <-e.stopping:
		}
	}()
	return link.Serve(stream, gatewaylink.ServeConfig{
		Welcome:           welcome,
		HeartbeatInterval: e.cfg.HeartbeatInterval,
		Clock:             e.cfg.Clock,
		Deliver: func(ctx context.Context, m *outpostv1.ConnectRequest) error {
			f := func(lctx context.Context) { e.onGatewayMessage(lctx, s, m) }
			select {
			case e.reqs <- f:
				return nil
			case <-e.stopping:
				return ErrLeadershipEnded
			case <-link.Done():
				return link.Err()
			case <-ctx.Done():
				return ctx.Err()
			}
		},
		Stopping:   e.stopping,
		Goroutines: &e.handlers,
	})
}

// register makes s the gateway's current session. Assignments the
// gateway reports as still running are bound to it; its other orphaned
// assignments go back to the queue, since it no longer runs them.
func (e *Engine) register(ctx context.Context, s *session, hello *outpostv1.GatewayHello) *outpostv1.GatewayWelcome {
	if old := e.gateways[s.name]; old != nil {
		e.detach(ctx, old, ErrReplaced)
	}
	e.gateways[s.name] = s
	reported := map[string]bool{}
	var rebound, unknown int
	for _, id := range hello.GetActiveAssignmentIds() {
		if reported[id] {
			continue
		}
		reported[id] = true
		n := e.assignments[id]
		if n == nil || n.rn.GetState() != outpostv1.NodeState_NODE_STATE_RUNNING || n.rn.GetAssignmentId() != id {
			unknown++
			s.link.Cancel(id, "unknown or finished assignment")
			continue
		}
		if n.sess != nil && n.sess != s {
			delete(n.sess.active, id)
		}
		n.sess = s
		s.active[id] = n
		delete(e.orphans, n)
		if n.rn.GetGateway() != s.name {
			n.rn.Gateway = s.name
			e.dirtyNodes[n] = struct{}{}
		}
		rebound++
	}
	var lost []*nodeRun
	for n := range e.orphans {
		if n.rn.GetGateway() == s.name && !reported[n.rn.GetAssignmentId()] {
			lost = append(lost, n)
		}
	}
	sort.Slice(lost, func(i, j int) bool { return lost[i].rn.GetAssignmentId() < lost[j].rn.GetAssignmentId() })
	for _, n := range lost {
		e.requeue(n, "gateway "+s.name+" reconnected without it", true)
	}

	rec := proto.CloneOf(hello)
	rec.ActiveAssignmentIds = nil
	if b, err := proto.Marshal(rec); err == nil {
		op := clientv3.OpPut(store.GatewayKey(s.name), string(b), clientv3.WithLease(e.lease))
		if err := e.cfg.Store.Txn(ctx, e.cfg.Fence, op); err != nil {
			e.log.Warn("writing gateway presence failed", "gateway", s.name, "err", err)
		}
	}
	e.updateGatewayGauge()
	e.log.Info("gateway connected", "gateway", s.name, "datacenter", s.dc, "capacity", s.capacity,
		"version", hello.GetVersion(), "resumed_assignments", rebound, "unknown_assignments", unknown, "requeued", len(lost))
	return &outpostv1.GatewayWelcome{
		Epoch:             e.cfg.Epoch,
		HeartbeatInterval: durationpb.New(e.cfg.HeartbeatInterval),
		AckedSequence:     e.acked[s.name],
	}
}

// detach ends session s; its outstanding assignments become orphans that
// wait OrphanGrace for the gateway to come back.
func (e *Engine) detach(ctx context.Context, s *session, why error) {
	deadline := e.cfg.Clock.Now().Add(e.cfg.OrphanGrace)
	for _, n := range s.active {
		n.sess = nil
		n.orphanDeadline = deadline
		e.orphans[n] = struct{}{}
	}
	orphaned := len(s.active)
	clear(s.active)
	// Health checks are not the node's failure: the round proves nothing.
	now := e.cfg.Clock.Now()
	for _, c := range s.checks {
		e.forgetCheck(c)
		if rd := c.round; c.n.run.round == rd {
			delete(rd.pending, c.id)
			rd.inconclusive = true
			if len(rd.pending) == 0 {
				e.endRound(c.n.run, now)
			}
		}
	}
	if why == nil {
		why = io.EOF
	}
	s.link.Close(why)
	if e.gateways[s.name] != s {
		return
	}
	delete(e.gateways, s.name)
	// When the engine is stopping (ctx ends, maybe during the write), it
	// revokes the presence lease instead, which removes the key too.
	if ctx.Err() == nil {
		if err := e.cfg.Store.Txn(ctx, e.cfg.Fence, clientv3.OpDelete(store.GatewayKey(s.name))); err != nil && ctx.Err() == nil {
			e.log.Warn("removing gateway presence failed", "gateway", s.name, "err", err)
		}
	}
	e.updateGatewayGauge()
	e.log.Info("gateway disconnected", "gateway", s.name, "datacenter", s.dc, "orphaned_assignments", orphaned)
}

func (e *Engine) updateGatewayGauge() {
	m := e.cfg.Metrics
	if m == nil {
		return
	}
	counts := map[string]int{}
	for _, s := range e.gateways {
		counts[s.dc]++
	}
	m.Gateways.Reset()
	for dc, n := range counts {
		m.Gateways.WithLabelValues(dc).Set(float64(n))
	}
}
