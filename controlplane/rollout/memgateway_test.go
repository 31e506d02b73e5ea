package rollout_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane/rollout"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// memGateway is a gateway connected to the engine in memory: it is the
// Connect stream (rollout.GatewayStream) that the engine's session layer
// (controlplane/gatewaylink) serves, as the API server hands it the gRPC
// stream. The test takes the assignments it receives and answers them
// with step events and results, as a real gateway would, without SSH.
// Like the gRPC stream, Recv ends with the stream's context.
type memGateway struct {
	t        *testing.T
	name, dc string

	ctx    context.Context
	cancel context.CancelFunc
	in     chan *outpostv1.ConnectRequest // to the engine
	served chan error                     // ServeGateway's result

	mu       sync.Mutex // guards the fields below
	welcome  *outpostv1.GatewayWelcome
	received []*outpostv1.Assignment // in arrival order
	taken    int                     // how many of received waitAssigned handed out
	cancels  []string
	acked    uint64
	seq      uint64
	changed  chan struct{} // closed and replaced on every message from the engine
}

var _ rollout.GatewayStream = (*memGateway)(nil)

// Context implements rollout.GatewayStream.
func (g *memGateway) Context() context.Context { return g.ctx }

// Send implements rollout.GatewayStream: the engine's message arrives.
func (g *memGateway) Send(m *outpostv1.ConnectResponse) error {
	if err := g.ctx.Err(); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch x := m.GetMsg().(type) {
	case *outpostv1.ConnectResponse_Welcome:
		g.welcome = x.Welcome
	case *outpostv1.ConnectResponse_Assignment:
		g.received = append(g.received, x.Assignment)
	case *outpostv1.ConnectResponse_Cancel:
		g.cancels = append(g.cancels, x.Cancel.GetAssignmentId())
	case *outpostv1.ConnectResponse_Ack:
		g.acked = max(g.acked, x.Ack.GetSequence())
	}
	close(g.changed)
	g.changed = make(chan struct{})
	return nil
}

// Recv implements rollout.GatewayStream: the gateway's next message.
func (g *memGateway) Recv() (*outpostv1.ConnectRequest, error) {
	select {
	case m := <-g.in:
		return m, nil
	case <-g.ctx.Done():
		return nil, g.ctx.Err()
	}
}

// connect connects gateway name of dc with capacity, reporting active as
// still running, and returns once the engine welcomed it. It disconnects
// when the test ends.
func (h *harness) connect(name, dc string, capacity int32, active ...string) *memGateway {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g := &memGateway{
		t: h.t, name: name, dc: dc, ctx: ctx, cancel: cancel,
		in: make(chan *outpostv1.ConnectRequest), served: make(chan error, 1), changed: make(chan struct{}),
	}
	hello := &outpostv1.GatewayHello{Name: name, Datacenter: dc, Capacity: capacity, Version: "mem", ActiveAssignmentIds: active}
	go func() { g.served <- h.eng.ServeGateway(g, hello) }()
	h.t.Cleanup(func() { g.disconnect() })
	g.wait("the welcome", func() bool { return g.welcome != nil })
	return g
}

// disconnect ends the stream, as a network cut would, and returns what
// the engine's ServeGateway returned.
func (g *memGateway) disconnect() error {
	g.cancel()
	select {
	case err := <-g.served:
		g.served <- err
		return err
	case <-time.After(waitLimit):
		g.t.Errorf("gateway %s: ServeGateway did not return within %v", g.name, waitLimit)
		return nil
	}
}

// wait waits until cond (called with g.mu held) holds.
func (g *memGateway) wait(what string, cond func() bool) {
	g.t.Helper()
	deadline := time.After(waitLimit)
	for {
		g.mu.Lock()
		ok, changed := cond(), g.changed
		g.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case err := <-g.served:
			g.served <- err
			g.t.Fatalf("gateway %s: waiting for %s, the stream ended: %v", g.name, what, err)
		case <-deadline:
			g.t.Fatalf("gateway %s: waited %v for %s", g.name, waitLimit, what)
		}
	}
}

// waitAssigned waits until n assignments more than already taken have
// arrived and returns them in arrival order.
func (g *memGateway) waitAssigned(n int) []*outpostv1.Assignment {
	g.t.Helper()
	var out []*outpostv1.Assignment
	g.wait("assignments", func() bool {
		if len(g.received)-g.taken < n {
			return false
		}
		out = g.received[g.taken : g.taken+n]
		g.taken += n
		return true
	})
	return out
}

// pending returns how many received assignments waitAssigned has not
// handed out.
func (g *memGateway) pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.received) - g.taken
}

// send hands m to the engine, numbered when it must be acknowledged.
func (g *memGateway) send(m *outpostv1.ConnectRequest, numbered bool) {
	g.t.Helper()
	if numbered {
		g.mu.Lock()
		g.seq++
		m.Sequence = g.seq
		g.mu.Unlock()
	}
	select {
	case g.in <- m:
	case <-g.ctx.Done():
		g.t.Fatalf("gateway %s: send on a closed stream", g.name)
	case <-time.After(waitLimit):
		g.t.Fatalf("gateway %s: the engine took no message for %v", g.name, waitLimit)
	}
}

// refuse refuses assignment a.
func (g *memGateway) refuse(a *outpostv1.Assignment, reason string) {
	g.t.Helper()
	g.send(&outpostv1.ConnectRequest{Msg: &outpostv1.ConnectRequest_AssignmentAck{AssignmentAck: &outpostv1.AssignmentAck{
		AssignmentId: a.GetAssignmentId(), Reason: reason,
	}}}, false)
}

// answer reports a step event and the result of assignment a (the node
// had release "previous" before), without waiting.
func (g *memGateway) answer(a *outpostv1.Assignment, state outpostv1.NodeState, errMsg string) {
	g.t.Helper()
	g.send(&outpostv1.ConnectRequest{Msg: &outpostv1.ConnectRequest_StepEvent{StepEvent: &outpostv1.AssignmentStepEvent{
		AssignmentId: a.GetAssignmentId(), Event: &outpostv1.NodeStepEvent{
			NodeId: a.GetNode().GetId(), RolloutId: a.GetRolloutId(), Step: outpostv1.Step_STEP_CONNECT,
			Phase: outpostv1.StepPhase_STEP_PHASE_STARTED, Time: timestamppb.Now(), Seq: 1,
		},
	}}}, true)
	g.send(&outpostv1.ConnectRequest{Msg: &outpostv1.ConnectRequest_NodeResult{NodeResult: &outpostv1.NodeResult{
		AssignmentId: a.GetAssignmentId(), NodeId: a.GetNode().GetId(), State: state, Error: errMsg,
		Release: a.GetRelease().GetId(), PreviousRelease: "previous", Step: outpostv1.Step_STEP_UNLOCK,
	}}}, true)
}

// finish answers assignment a and waits until the engine acknowledged
// the result: it acknowledges a result once it is applied and written,
// after queueing on the stream whatever the result made it send, so what
// the result started has arrived when finish returns.
func (g *memGateway) finish(a *outpostv1.Assignment, state outpostv1.NodeState, errMsg string) {
	g.t.Helper()
	g.answer(a, state, errMsg)
	g.mu.Lock()
	seq := g.seq
	g.mu.Unlock()
	g.wait("the ack of the result", func() bool { return g.acked >= seq })
}

// delivered returns once every message sent before is queued on the
// engine's loop: the session layer takes the next message from the
// stream only after it handed the previous one to the engine, so once a
// second heartbeat was taken, the first (and all before it) was handed
// over. Messages that change nothing durable (a healthy bake check, a
// refusal) are acknowledged only later, so their ack cannot tell.
func (g *memGateway) delivered() {
	g.t.Helper()
	for range 2 {
		g.send(&outpostv1.ConnectRequest{Msg: &outpostv1.ConnectRequest_Heartbeat{Heartbeat: &outpostv1.GatewayHeartbeat{}}}, false)
	}
}

// applied returns once the engine applied every message g sent before.
func (h *harness) applied(g *memGateway) {
	h.t.Helper()
	g.delivered()
	h.settle()
}
