package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/pki/enroll"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeGateway is a gateway for tests: it dials the control plane with the
// real gRPC client, says hello, and answers assignments as the test says,
// without SSH. In auto mode (auto != nil) each assignment is answered at
// once with auto's result, by a goroutine of its own, so that receiving
// never waits for sending (as in the real gateway: a control plane busy
// sending a burst of assignments reads nothing meanwhile, and flow control
// would stall both ends); otherwise the test picks assignments with
// waitAssigned and ends them with finish. It counts assignments per node.
type fakeGateway struct {
	t        testing.TB
	name, dc string
	capacity int32
	// auto, when set, decides the result of every assignment at once.
	auto func(a *outpostv1.Assignment) (outpostv1.NodeState, string)
	// silent stops heartbeats.
	silent bool
	// refuse, when set, refuses every assignment with this reason.
	refuse string
	// everyStep reports each step of a real deployment (connect to
	// unlock) started and succeeded before a success, as the gateway does.
	everyStep bool
	// cred is the gateway's credential, joined on the first connect.
	cred *pki.Credential

	sendMu  sync.Mutex // serializes stream.Send
	mu      sync.Mutex // guards the fields below
	conn    *grpc.ClientConn
	stream  grpc.BidiStreamingClient[outpostv1.ConnectRequest, outpostv1.ConnectResponse]
	cancel  context.CancelFunc
	done    chan struct{} // closed when the receive goroutine ends
	recvErr error
	welcome *outpostv1.GatewayWelcome
	// all assignments received, in order
	received []*outpostv1.Assignment
	// running assignments by id (received, not finished)
	running map[string]*outpostv1.Assignment
	// taken counts how many of received waitAssigned handed out
	taken   int
	cancels []string
	acked   uint64
	seq     uint64
	// stepSeq numbers step events per assignment
	stepSeq map[string]uint64
	// autoQueue are the assignments auto mode has yet to answer, oldest
	// first.
	autoQueue []*outpostv1.Assignment
	changed   chan struct{} // signalled on every received message
}

func newFakeGateway(t testing.TB, name, dc string, capacity int32) *fakeGateway {
	return &fakeGateway{
		t: t, name: name, dc: dc, capacity: capacity,
		running: map[string]*outpostv1.Assignment{},
		stepSeq: map[string]uint64{},
		changed: make(chan struct{}, 1),
	}
}

// connect opens a stream to addr, reporting active as still running. It
// retries while no leader accepts gateways (UNAVAILABLE), bounded.
func (g *fakeGateway) connect(addr string, active ...string) {
	g.t.Helper()
	if g.cred == nil {
		// Joined once; the CA is shared, so the credential works with
		// every replica and across restarts.
		g.cred = gatewayCred(g.t, addr, g.name, g.dc)
	}
	conn, err := enroll.Dial(addr, g.cred)
	if err != nil {
		g.t.Fatalf("gateway %s: dial: %v", g.name, err)
	}
	var lastErr error
	for attempt := 0; attempt < 100; attempt++ {
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := outpostv1.NewGatewayServiceClient(conn).Connect(ctx)
		if err == nil {
			err = stream.Send(&outpostv1.ConnectRequest{Msg: &outpostv1.ConnectRequest_Hello{Hello: &outpostv1.GatewayHello{
				Name: g.name, Datacenter: g.dc, Capacity: g.capacity, Version: "fake", ActiveAssignmentIds: active,
			}}})
		}
		var first *outpostv1.ConnectResponse
		if err == nil {
			first, err = stream.Recv()
		}
		if err == nil {
			if first.GetWelcome() == nil {
				cancel()
				conn.Close()
				g.t.Fatalf("gateway %s: first message %v, want welcome", g.name, first)
			}
			g.mu.Lock()
			g.conn, g.stream, g.cancel, g.welcome = conn, stream, cancel, first.GetWelcome()
			g.done = make(chan struct{})
			g.recvErr = nil
			// Only reported assignments stay running across a reconnect.
			for id := range g.running {
				if !slices.Contains(active, id) {
					delete(g.running, id)
				}
			}
			g.mu.Unlock()
			go g.receive(stream, g.done, ctx)
			return
		}
		cancel()
		lastErr = err
		if status.Code(err) != codes.Unavailable {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn.Close()
	g.t.Fatalf("gateway %s: connect: %v", g.name, lastErr)
}

// disconnect ends the stream (as a network cut would) and waits for the
// receive goroutine.
func (g *fakeGateway) disconnect() {
	g.mu.Lock()
	cancel, done, conn := g.cancel, g.done, g.conn
	g.cancel, g.conn = nil, nil
	g.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	conn.Close()
}

// runningIDs returns the assignments running on this gateway, sorted.
func (g *fakeGateway) runningIDs() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var ids []string
	for id := range g.running {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (g *fakeGateway) receive(stream grpc.BidiStreamingClient[outpostv1.ConnectRequest, outpostv1.ConnectResponse], done chan struct{}, ctx context.Context) {
	defer close(done)
	if !g.silent {
		beat := make(chan struct{})
		defer func() { <-beat }()
		go func() {
			defer close(beat)
			g.heartbeats(ctx)
		}()
	}
	var work chan struct{} // signalled when autoQueue grew
	if g.auto != nil {
		work = make(chan struct{}, 1)
		stop, answered := make(chan struct{}), make(chan struct{})
		defer func() {
			close(stop)
			<-answered
			// Unanswered assignments went with the stream.
			g.mu.Lock()
			g.autoQueue = nil
			g.mu.Unlock()
		}()
		go func() {
			defer close(answered)
			g.answer(work, stop)
		}()
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			g.mu.Lock()
			g.recvErr = err
			g.mu.Unlock()
			g.signal()
			return
		}
		var refused *outpostv1.Assignment
		g.mu.Lock()
		switch x := m.GetMsg().(type) {
		case *outpostv1.ConnectResponse_Assignment:
			g.received = append(g.received, x.Assignment)
			switch {
			case g.refuse != "":
				refused = x.Assignment
			case g.auto != nil:
				g.running[x.Assignment.GetAssignmentId()] = x.Assignment
				g.autoQueue = append(g.autoQueue, x.Assignment)
				select {
				case work <- struct{}{}:
				default:
				}
			default:
				g.running[x.Assignment.GetAssignmentId()] = x.Assignment
			}
		case *outpostv1.ConnectResponse_Cancel:
			g.cancels = append(g.cancels, x.Cancel.GetAssignmentId())
		case *outpostv1.ConnectResponse_Ack:
			g.acked = max(g.acked, x.Ack.GetSequence())
		}
		g.mu.Unlock()
		g.signal()
		if refused != nil {
			g.send(&outpostv1.ConnectRequest{Msg: &outpostv1.ConnectRequest_AssignmentAck{AssignmentAck: &outpostv1.AssignmentAck{ //nolint:errcheck // a cut stream shows in the test's waits
				AssignmentId: refused.GetAssignmentId(), Reason: g.refuse,
			}}})
		}
	}
}

// answer answers the assignments of autoQueue with auto's result until
// stop is closed; a send it is stuck in ends with the stream.
func (g *fakeGateway) answer(work, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-work:
		}
		for {
			g.mu.Lock()
			if len(g.autoQueue) == 0 {
				g.mu.Unlock()
				break
			}
			a := g.autoQueue[0]
			g.autoQueue = g.autoQueue[1:]
			g.mu.Unlock()
			if err := g.send(&outpostv1.ConnectRequest{Msg: &outpostv1.ConnectRequest_AssignmentAck{AssignmentAck: &outpostv1.AssignmentAck{
				AssignmentId: a.GetAssignmentId(), Accepted: true,
			}}}); err != nil {
				continue
			}
			state, msg := g.auto(a)
			g.finish(a.GetAssignmentId(), state, msg) //nolint:errcheck // a cut stream shows in the test's waits
		}
	}
}

// heartbeats sends a heartbeat every welcome.heartbeat_interval until ctx ends.
func (g *fakeGateway) heartbeats(ctx context.Context) {
	g.mu.Lock()
	every := g.welcome.GetHeartbeatInterval().AsDuration()
	g.mu.Unlock()
	if every <= 0 {
		return
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := g.send(&outpostv1.ConnectRequest{Msg: &outpostv1.ConnectRequest_Heartbeat{Heartbeat: &outpostv1.GatewayHeartbeat{Time: timestamppb.Now()}}}); err != nil {
				return
			}
		}
	}
}

func (g *fakeGateway) signal() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

func (g *fakeGateway) send(m *outpostv1.ConnectRequest) error {
	g.mu.Lock()
	stream := g.stream
	g.mu.Unlock()
	g.sendMu.Lock()
	defer g.sendMu.Unlock()
	return stream.Send(m)
}

// step sends one step event of an assignment.
func (g *fakeGateway) step(id string, step outpostv1.Step, phase outpostv1.StepPhase) error {
	g.mu.Lock()
	a := g.running[id]
	g.seq++
	g.stepSeq[id]++
	seq, stepSeq := g.seq, g.stepSeq[id]
	g.mu.Unlock()
	if a == nil {
		return fmt.Errorf("assignment %s not running here", id)
	}
	ev := &outpostv1.NodeStepEvent{
		NodeId: a.GetNode().GetId(), RolloutId: a.GetRolloutId(), Step: step, Phase: phase,
		Time: timestamppb.Now(), Seq: stepSeq,
	}
	if phase != outpostv1.StepPhase_STEP_PHASE_STARTED {
		ev.Duration = durationpb.New(3 * time.Millisecond)
	}
	return g.send(&outpostv1.ConnectRequest{Sequence: seq, Msg: &outpostv1.ConnectRequest_StepEvent{StepEvent: &outpostv1.AssignmentStepEvent{
		AssignmentId: id, Event: ev,
	}}})
}

// finish reports a few steps and the result of a running assignment.
func (g *fakeGateway) finish(id string, state outpostv1.NodeState, errMsg string) error {
	if err := g.step(id, outpostv1.Step_STEP_CONNECT, outpostv1.StepPhase_STEP_PHASE_STARTED); err != nil {
		return err
	}
	if g.everyStep && state == outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		for s := outpostv1.Step_STEP_CONNECT; s < outpostv1.Step_STEP_UNLOCK; s++ {
			if s != outpostv1.Step_STEP_CONNECT {
				if err := g.step(id, s, outpostv1.StepPhase_STEP_PHASE_STARTED); err != nil {
					return err
				}
			}
			if err := g.step(id, s, outpostv1.StepPhase_STEP_PHASE_SUCCEEDED); err != nil {
				return err
			}
		}
	}
	last := outpostv1.Step_STEP_UNLOCK
	phase := outpostv1.StepPhase_STEP_PHASE_SUCCEEDED
	if state != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		last, phase = outpostv1.Step_STEP_HEALTH, outpostv1.StepPhase_STEP_PHASE_FAILED
	}
	if err := g.step(id, last, phase); err != nil {
		return err
	}
	g.mu.Lock()
	a := g.running[id]
	delete(g.running, id)
	g.seq++
	seq := g.seq
	g.mu.Unlock()
	return g.send(&outpostv1.ConnectRequest{Sequence: seq, Msg: &outpostv1.ConnectRequest_NodeResult{NodeResult: &outpostv1.NodeResult{
		AssignmentId: id, NodeId: a.GetNode().GetId(), State: state, Step: last, Error: errMsg,
		Release: a.GetRelease().GetId(), Duration: durationpb.New(10 * time.Millisecond),
	}}})
}

// finishNode finishes the running assignment of node id.
func (g *fakeGateway) finishNode(nodeID string, state outpostv1.NodeState, errMsg string) {
	g.t.Helper()
	g.mu.Lock()
	var aid string
	for id, a := range g.running {
		if a.GetNode().GetId() == nodeID {
			aid = id
		}
	}
	g.mu.Unlock()
	if aid == "" {
		g.t.Fatalf("gateway %s: node %s is not running here", g.name, nodeID)
	}
	if err := g.finish(aid, state, errMsg); err != nil {
		g.t.Fatalf("gateway %s: finish %s: %v", g.name, nodeID, err)
	}
}

// waitAssigned waits until n more assignments than already taken have
// arrived and returns them in arrival order.
func (g *fakeGateway) waitAssigned(n int) []*outpostv1.Assignment {
	g.t.Helper()
	deadline := time.After(waitLimit)
	for {
		g.mu.Lock()
		if len(g.received)-g.taken >= n {
			out := g.received[g.taken : g.taken+n]
			g.taken += n
			g.mu.Unlock()
			return out
		}
		got, err := len(g.received)-g.taken, g.recvErr
		g.mu.Unlock()
		select {
		case <-g.changed:
		case <-deadline:
			g.t.Fatalf("gateway %s: got %d new assignments, want %d (stream error: %v)", g.name, got, n, err)
		}
	}
}

// pending returns how many received assignments waitAssigned has not
// handed out.
func (g *fakeGateway) pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.received) - g.taken
}

// counts returns assignments received per node id.
func (g *fakeGateway) counts() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := map[string]int{}
	for _, a := range g.received {
		c[a.GetNode().GetId()]++
	}
	return c
}

// sync waits until every assignment the control plane decided before
// this call has arrived, so that pending() then says whether it sent more
// than it should. It sends a step event for an assignment that does not
// exist (a gateway may report on one the control plane forgot; the
// engine ignores it) under the next sequence number and waits for the
// ack: the engine acks a sequence only once it applied it, and queues
// the ack on the stream after every assignment it decided before.
func (g *fakeGateway) sync() {
	g.t.Helper()
	g.mu.Lock()
	g.seq++
	seq := g.seq
	g.mu.Unlock()
	if err := g.send(&outpostv1.ConnectRequest{Sequence: seq, Msg: &outpostv1.ConnectRequest_StepEvent{StepEvent: &outpostv1.AssignmentStepEvent{
		AssignmentId: fmt.Sprintf("sync-%d", seq),
		Event:        &outpostv1.NodeStepEvent{Step: outpostv1.Step_STEP_CONNECT, Phase: outpostv1.StepPhase_STEP_PHASE_STARTED, Time: timestamppb.Now()},
	}}}); err != nil {
		g.t.Fatalf("gateway %s: sync: %v", g.name, err)
	}
	g.waitAcked()
}

// waitAcked waits until the control plane acked sequence seq.
func (g *fakeGateway) waitAcked() uint64 {
	g.t.Helper()
	deadline := time.After(waitLimit)
	for {
		g.mu.Lock()
		acked, seq := g.acked, g.seq
		g.mu.Unlock()
		if acked >= seq {
			return acked
		}
		select {
		case <-g.changed:
		case <-deadline:
			g.t.Fatalf("gateway %s: acked %d, want %d", g.name, acked, seq)
		}
	}
}

// streamErr returns the error that ended the stream, nil while it runs.
func (g *fakeGateway) streamErr() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.recvErr != nil && errors.Is(g.recvErr, io.EOF) {
		return nil
	}
	return g.recvErr
}
