package rollout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Reasons a gateway session ends, for the API to turn into status codes.
var (
	// ErrReplaced: a newer stream of the same gateway took over.
	ErrReplaced = errors.New("replaced by a newer stream of the same gateway")
	// ErrLeadershipEnded: this replica stopped leading; reconnect (to the leader).
	ErrLeadershipEnded = errors.New("this control plane is no longer the leader")
	// ErrHeartbeatTimeout: the gateway sent nothing for three heartbeat intervals.
	ErrHeartbeatTimeout = errors.New("no heartbeat from the gateway")
)

// GatewayStream is the part of the Connect stream the engine uses.
type GatewayStream interface {
	Context() context.Context
	Send(*outpostv1.ConnectResponse) error
	Recv() (*outpostv1.ConnectRequest, error)
}

// session is one Connect stream of one gateway.
type session struct {
	name     string
	dc       string
	capacity int

	// Owned by the loop.
	active       map[string]*nodeRun // assignments outstanding, by id
	checks       map[string]*check   // bake health checks outstanding, by id
	refusedUntil time.Time

	mu       sync.Mutex // guards queue and closeErr
	queue    []*outpostv1.ConnectResponse
	closeErr error
	signal   chan struct{} // capacity 1: queue is non-empty
	closed   chan struct{} // closed by close
}

func newSession(h *outpostv1.GatewayHello, defaultCapacity int) *session {
	c := int(h.GetCapacity())
	if c <= 0 {
		c = defaultCapacity
	}
	return &session{
		name:     h.GetName(),
		dc:       h.GetDatacenter(),
		capacity: c,
		active:   map[string]*nodeRun{},
		checks:   map[string]*check{},
		signal:   make(chan struct{}, 1),
		closed:   make(chan struct{}),
	}
}

// enqueue queues m for the stream; it never blocks.
func (s *session) enqueue(m *outpostv1.ConnectResponse) {
	s.mu.Lock()
	s.queue = append(s.queue, m)
	s.mu.Unlock()
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

func (s *session) take() []*outpostv1.ConnectResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

// close ends the session with err (first call wins).
func (s *session) close(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closeErr != nil {
		return
	}
	s.closeErr = err
	close(s.closed)
}

func (s *session) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeErr
}

// ServeGateway runs one gateway's Connect stream after its hello: it
// registers the gateway, sends the welcome, then streams assignments and
// acks while applying what the gateway reports. It returns when the stream
// ends, the gateway is replaced by a newer stream, heartbeats stop, or the
// engine stops (ErrStopped, ErrLeadershipEnded). io.EOF from the gateway
// returns nil.
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
	s := newSession(hello, e.cfg.DefaultCapacity)
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
	if err := stream.Send(&outpostv1.ConnectResponse{Msg: &outpostv1.ConnectResponse_Welcome{Welcome: welcome}}); err != nil {
		return err
	}

	msgs := make(chan *outpostv1.ConnectRequest)
	recvErr := make(chan error, 1)
	// Recv cannot be interrupted except by ending the stream, which
	// happens when this handler returns; the goroutine then ends too, and
	// Run waits for it.
	e.handlers.Add(1)
	go func() {
		defer e.handlers.Done()
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()

	timeout := 3*e.cfg.HeartbeatInterval + e.cfg.HeartbeatInterval/2
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case m := <-msgs:
			timer.Reset(timeout)
			f := func(lctx context.Context) { e.onGatewayMessage(lctx, s, m) }
			select {
			case e.reqs <- f:
			case <-e.stopping:
				return ErrLeadershipEnded
			case <-s.closed:
				return s.err()
			case <-ctx.Done():
				return ctx.Err()
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-s.signal:
			for _, m := range s.take() {
				if err := stream.Send(m); err != nil {
					return err
				}
			}
		case <-s.closed:
			// Flush what was queued before the close (a final ack).
			for _, m := range s.take() {
				if err := stream.Send(m); err != nil {
					break
				}
			}
			return s.err()
		case <-e.stopping:
			return ErrLeadershipEnded
		case <-timer.C:
			return fmt.Errorf("%w for %v", ErrHeartbeatTimeout, timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
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
			s.enqueue(&outpostv1.ConnectResponse{Msg: &outpostv1.ConnectResponse_Cancel{Cancel: &outpostv1.AssignmentCancel{
				AssignmentId: id, Reason: "unknown or finished assignment",
			}}})
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
	deadline := e.cfg.Now().Add(e.cfg.OrphanGrace)
	for _, n := range s.active {
		n.sess = nil
		n.orphanDeadline = deadline
		e.orphans[n] = struct{}{}
	}
	orphaned := len(s.active)
	clear(s.active)
	// Health checks are not the node's failure: the round proves nothing.
	now := e.cfg.Now()
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
	s.close(why)
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

// onGatewayMessage applies one message from a gateway. Duplicates (a
// gateway re-sending after a reconnect) are recognized by assignment id
// and per-node event sequence and ignored.
func (e *Engine) onGatewayMessage(ctx context.Context, s *session, m *outpostv1.ConnectRequest) {
	switch x := m.GetMsg().(type) {
	case *outpostv1.ConnectRequest_Heartbeat:
	case *outpostv1.ConnectRequest_AssignmentAck:
		e.onAck(s, x.AssignmentAck)
	case *outpostv1.ConnectRequest_StepEvent:
		e.onStep(ctx, x.StepEvent)
	case *outpostv1.ConnectRequest_NodeResult:
		e.onResult(x.NodeResult)
	case *outpostv1.ConnectRequest_Hello:
		e.log.Warn("gateway sent a second hello; ignored", "gateway", s.name)
	}
	if seq := m.GetSequence(); seq > 0 {
		if len(e.ackPending) == 0 {
			e.ackSince = e.cfg.Now()
		}
		e.ackPending[s.name] = max(e.ackPending[s.name], seq)
	}
}

// current returns the node whose current assignment is id, or nil.
func (e *Engine) current(id string) *nodeRun {
	n := e.assignments[id]
	if n == nil || n.rn.GetAssignmentId() != id || n.rn.GetState() != outpostv1.NodeState_NODE_STATE_RUNNING {
		return nil
	}
	return n
}

func (e *Engine) onAck(s *session, a *outpostv1.AssignmentAck) {
	if a.GetAccepted() {
		if n := e.current(a.GetAssignmentId()); n != nil {
			n.refusals = 0
		}
		return
	}
	n := e.current(a.GetAssignmentId())
	if n == nil {
		return
	}
	s.refusedUntil = e.cfg.Now().Add(e.cfg.RefuseBackoff)
	why := "refused by gateway " + s.name + ": " + a.GetReason()
	e.log.Info("gateway refused an assignment", "gateway", s.name, "node", n.id(), "reason", a.GetReason(), "refusals", n.refusals+1)
	e.requeue(n, why, false)
	// A refusal that keeps coming back is not going away (an invalid
	// assignment); fail the node instead of offering it forever.
	if n.refusals++; n.refusals >= maxRefusals && n.rn.GetState() == outpostv1.NodeState_NODE_STATE_PENDING {
		e.failNode(n, why)
	}
}

func (e *Engine) onStep(ctx context.Context, se *outpostv1.AssignmentStepEvent) {
	n := e.current(se.GetAssignmentId())
	ev := se.GetEvent()
	if n == nil || ev == nil {
		return
	}
	if ev.GetSeq() != 0 && ev.GetSeq() <= n.rn.GetLastEventSeq() {
		return
	}
	n.rn.Step = ev.GetStep()
	n.rn.StepPhase = ev.GetPhase()
	if ev.GetSeq() != 0 {
		n.rn.LastEventSeq = ev.GetSeq()
	}
	// Progress alone is written lazily (see progressInterval); the ack
	// of this event covers it once applied here.
	e.progressed[n] = struct{}{}
	stepName := strings.TrimPrefix(ev.GetStep().String(), "STEP_")
	if m := e.cfg.Metrics; m != nil && ev.GetDuration() != nil {
		switch ev.GetPhase() {
		case outpostv1.StepPhase_STEP_PHASE_SUCCEEDED, outpostv1.StepPhase_STEP_PHASE_FAILED:
			m.StepDuration.WithLabelValues(stepName, strings.TrimPrefix(ev.GetPhase().String(), "STEP_PHASE_")).
				Observe(ev.GetDuration().AsDuration().Seconds())
		}
	}
	if n.span != nil {
		n.span.AddEvent(stepName + " " + strings.ToLower(strings.TrimPrefix(ev.GetPhase().String(), "STEP_PHASE_")))
	}
	if e.cfg.Events != nil {
		out := proto.CloneOf(ev)
		out.NodeId, out.RolloutId = n.id(), n.run.id()
		e.cfg.Events.Publish(ctx, n.run.id(), n.rn.GetGateway(), out)
	}
}

func (e *Engine) onResult(res *outpostv1.NodeResult) {
	if c := e.checks[res.GetAssignmentId()]; c != nil {
		e.onCheckResult(c, res)
		return
	}
	n := e.current(res.GetAssignmentId())
	if n == nil {
		e.log.Debug("result for an unknown or finished assignment; ignored", "assignment", res.GetAssignmentId())
		return
	}
	state := res.GetState()
	errMsg := res.GetError()
	switch state {
	case outpostv1.NodeState_NODE_STATE_SUCCEEDED:
	case outpostv1.NodeState_NODE_STATE_FAILED, outpostv1.NodeState_NODE_STATE_ROLLED_BACK, outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED:
		if errMsg == "" {
			errMsg = "deployment " + strings.ToLower(rolloutstate.NodeName(state))
		}
	default:
		errMsg = fmt.Sprintf("gateway reported %s as a result: %s", state, errMsg)
		state = outpostv1.NodeState_NODE_STATE_FAILED
	}
	e.unbind(n)
	delete(e.assignments, res.GetAssignmentId())
	delete(e.orphans, n)
	if res.GetStep() != outpostv1.Step_STEP_UNSPECIFIED {
		n.rn.Step = res.GetStep()
	}
	switch n.kind() {
	case outpostv1.AssignmentKind_ASSIGNMENT_KIND_ROLLBACK, outpostv1.AssignmentKind_ASSIGNMENT_KIND_RUN_HOOK:
		if n.rn.GetRollingBack() || n.isSwitch() {
			state, errMsg = e.applyAuxResult(n, state, errMsg, res)
		} else {
			n.rn.State, n.rn.Error = state, errMsg
		}
	default:
		n.rn.State = state
		n.rn.Error = errMsg
		n.rn.PreviousRelease = res.GetPreviousRelease()
	}
	e.markNode(n)
	endNodeSpan(n, errMsg)
	if m := e.cfg.Metrics; m != nil {
		m.NodeDeployments.WithLabelValues(rolloutstate.NodeName(state)).Inc()
	}
	lvl := "node finished"
	if state != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		e.log.Warn(lvl, "rollout", n.run.id(), "node", n.id(), "state", rolloutstate.NodeName(state), "step", res.GetStep().String(), "err", errMsg)
	} else {
		e.log.Debug(lvl, "rollout", n.run.id(), "node", n.id(), "state", rolloutstate.NodeName(state))
	}
	if n.rn.GetRollingBack() || n.isSwitch() {
		return // no budget: a switch failure and rollbacks end the rollout by themselves
	}
	e.checkBudget(n.run, n.stage)
}

// applyAuxResult records the outcome of a rollback or a traffic switch
// hook and returns the node's new state and error.
func (e *Engine) applyAuxResult(n *nodeRun, state outpostv1.NodeState, errMsg string, res *outpostv1.NodeResult) (outpostv1.NodeState, string) {
	r := n.run
	ok := state == outpostv1.NodeState_NODE_STATE_SUCCEEDED
	switch {
	case n.rn.GetRollingBack() && ok:
		to := "its previous release " + n.rn.GetPreviousRelease()
		if n.isSwitch() {
			to = "traffic to " + colorOr(r.r.GetBlueGreen().GetLiveColor(), "the previous color")
		} else if n.rn.GetPreviousRelease() == "" {
			to = "no release (it had none before)"
		}
		n.rn.State = outpostv1.NodeState_NODE_STATE_ROLLED_BACK
		n.rn.Error = strings.TrimSuffix(n.rn.GetError(), "; rolling back") + "; rolled back to " + to
	case n.rn.GetRollingBack():
		n.rn.State = outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED
		n.rn.Error = n.rn.GetError() + "; ROLLBACK FAILED: " + errMsg
		e.log.Error("ROLLBACK FAILED: node needs attention", "rollout", r.id(), "node", n.id(), "err", errMsg)
	case ok: // the traffic switch
		n.rn.State, n.rn.Error = outpostv1.NodeState_NODE_STATE_SUCCEEDED, ""
	default: // the traffic switch failed
		e.switchFailed(n, errMsg)
	}
	_ = res
	return n.rn.GetState(), n.rn.GetError()
}

func (e *Engine) unbind(n *nodeRun) {
	if n.sess != nil {
		delete(n.sess.active, n.rn.GetAssignmentId())
		n.sess = nil
	}
}

// requeue takes a running node off its gateway. In a running rollout it
// goes back to PENDING and is assigned again; in an aborting rollout it
// does not start again: SKIPPED if it never started, else FAILED because
// its outcome is unknown.
func (e *Engine) requeue(n *nodeRun, why string, started bool) {
	if started {
		// Its gateway may have died holding the node's lock: the next
		// assignment may take that lock over, and only that one.
		n.takeover = n.rn.GetAssignmentId()
	}
	e.unbind(n)
	delete(e.assignments, n.rn.GetAssignmentId())
	delete(e.orphans, n)
	endNodeSpan(n, "re-queued: "+why)
	e.markNode(n)
	if n.rn.GetRollingBack() {
		// Rollbacks run whatever the rollout does; the next one takes it.
		n.rn.State = outpostv1.NodeState_NODE_STATE_PENDING
		n.rn.AssignmentId = ""
		n.rn.Gateway = ""
		return
	}
	if n.run.aborting() {
		if started {
			n.rn.State = outpostv1.NodeState_NODE_STATE_FAILED
			n.rn.Error = "deployment interrupted (" + why + "); the node's state is unknown"
		} else {
			n.rn.State = outpostv1.NodeState_NODE_STATE_SKIPPED
		}
		return
	}
	n.rn.State = outpostv1.NodeState_NODE_STATE_PENDING
	n.rn.AssignmentId = ""
	n.rn.Gateway = ""
	n.rn.Step = outpostv1.Step_STEP_UNSPECIFIED
	n.rn.StepPhase = outpostv1.StepPhase_STEP_PHASE_UNSPECIFIED
	n.rn.Error = ""
}

// dispatch assigns the pending nodes of every running batch to gateways
// of their datacenters, within gateway capacity, the stage's max_parallel
// per gateway and Config.MaxPerDatacenter; and, in rollouts that are
// stopping, the nodes waiting to be rolled back.
func (e *Engine) dispatch() {
	now := e.cfg.Now()
	ids := make([]string, 0, len(e.runs))
	for id, r := range e.runs {
		if r.r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_RUNNING {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	full := map[string]bool{}   // datacenters with no free gateway now
	absent := map[string]bool{} // datacenters with no gateway at all
	waiting := map[string]int{} // nodes waiting by datacenter with no gateway
	running := map[string]int{} // assignments running by datacenter, for MaxPerDatacenter
	for _, s := range e.gateways {
		running[s.dc] += len(s.active)
	}
	dcLimit := e.cfg.MaxPerDatacenter
	for _, id := range ids {
		r := e.runs[id]
		var candidates []*nodeRun
		mp := 0
		perGateway := map[string]int{}
		if r.aborting() {
			for _, n := range r.order {
				if n.rn.GetRollingBack() && n.rn.GetState() == outpostv1.NodeState_NODE_STATE_PENDING {
					candidates = append(candidates, n)
				}
			}
		} else {
			cur := int(r.r.GetCurrentStage())
			st := r.r.GetStages()[cur]
			b := int(st.GetCurrentBatch())
			if st.GetState() != outpostv1.StageState_STAGE_STATE_RUNNING || b < 0 || b >= len(r.batches[cur]) {
				continue
			}
			candidates = r.batches[cur][b]
			mp = int(st.GetMaxParallel())
			for _, n := range candidates {
				if n.rn.GetState() == outpostv1.NodeState_NODE_STATE_RUNNING {
					perGateway[n.rn.GetGateway()]++
				}
			}
		}
		atLimit := func(s *session) bool { return mp > 0 && perGateway[s.name] >= mp }
		waitDCs := map[string]bool{}
		rollingBack := r.aborting()
		for _, n := range candidates {
			if r.aborting() != rollingBack {
				break // a failure below crossed the budget
			}
			if n.rn.GetState() != outpostv1.NodeState_NODE_STATE_PENDING {
				continue
			}
			dc := n.rn.GetDatacenter()
			if n.node == nil {
				e.failNode(n, "node "+n.id()+" is no longer in the inventory")
				continue
			}
			if now := n.node.GetDatacenter(); now != dc {
				e.failNode(n, fmt.Sprintf("node %s moved from datacenter %s to %s after the rollout was created", n.id(), dc, now))
				continue
			}
			var s *session
			if dcLimit > 0 && running[dc] >= dcLimit {
				continue // the datacenter's bound: the node waits its turn
			}
			if !full[dc] {
				var connected bool
				s, connected = e.pickGateway(dc, now, atLimit)
				if s == nil && !e.anyFree(dc, now) {
					full[dc] = true
					absent[dc] = !connected
				}
			}
			if s == nil {
				if absent[dc] {
					waitDCs[dc] = true
					waiting[dc]++
					e.setNodeWaiting(n, dc)
				}
				continue
			}
			e.assign(n, s)
			perGateway[s.name]++
			running[dc]++
		}
		e.setRunWaiting(r, waitDCs)
	}
	for dc, count := range waiting {
		if now.Sub(e.waitLogged[dc]) >= e.cfg.GatewayWaitLog {
			e.waitLogged[dc] = now
			e.log.Info("waiting for a gateway", "datacenter", dc, "nodes", count)
		}
	}
}

// WaitMessage is the status of a node (RolloutNode.error while PENDING)
// and of its rollout while no gateway of its datacenter is connected.
func WaitMessage(dc string) string { return "waiting for a gateway in datacenter " + dc }

func (e *Engine) setNodeWaiting(n *nodeRun, dc string) {
	if msg := WaitMessage(dc); n.rn.GetError() != msg {
		n.rn.Error = msg
		e.dirtyNodes[n] = struct{}{}
	}
}

func (e *Engine) setRunWaiting(r *run, dcs map[string]bool) {
	msg := ""
	if len(dcs) > 0 {
		list := make([]string, 0, len(dcs))
		for dc := range dcs {
			list = append(list, dc)
		}
		sort.Strings(list)
		msg = WaitMessage(strings.Join(list, ", "))
	}
	if msg == r.waitMsg {
		return
	}
	// Do not overwrite a message that says something else.
	if r.r.GetMessage() == "" || r.r.GetMessage() == r.waitMsg {
		r.r.Message = msg
		e.markRun(r)
	}
	r.waitMsg = msg
}

// pickGateway returns the connected gateway of dc with the most free
// capacity that skip (nil: none) does not rule out, or nil; connected
// reports whether dc has any gateway at all.
func (e *Engine) pickGateway(dc string, now time.Time, skip func(*session) bool) (best *session, connected bool) {
	bestFree := 0
	for _, s := range e.gateways {
		if s.dc != dc {
			continue
		}
		connected = true
		if now.Before(s.refusedUntil) || (skip != nil && skip(s)) {
			continue
		}
		if free := s.free(); free > bestFree || (free == bestFree && free > 0 && best != nil && s.name < best.name) {
			best, bestFree = s, free
		}
	}
	return best, connected
}

// anyFree reports whether some gateway of dc has free capacity now.
func (e *Engine) anyFree(dc string, now time.Time) bool {
	s, _ := e.pickGateway(dc, now, nil)
	return s != nil
}

// free is how many more assignments the gateway takes now.
func (s *session) free() int { return s.capacity - len(s.active) - len(s.checks) }

// assign records n as running on gateway s and queues its assignment,
// which is sent once the record is durable.
func (e *Engine) assign(n *nodeRun, s *session) {
	r := n.run
	now := e.cfg.Now()
	e.assignSeq++
	aid := fmt.Sprintf("%s-%s-e%d-%d", r.id(), n.id(), e.cfg.Epoch, e.assignSeq)
	kind := n.kind()
	n.rn.State = outpostv1.NodeState_NODE_STATE_RUNNING
	n.rn.Gateway = s.name
	n.rn.AssignmentId = aid
	n.rn.StartTime = timestamppb.New(now)
	n.rn.Step = outpostv1.Step_STEP_UNSPECIFIED
	n.rn.StepPhase = outpostv1.StepPhase_STEP_PHASE_UNSPECIFIED
	n.rn.LastEventSeq = 0
	if kind == outpostv1.AssignmentKind_ASSIGNMENT_KIND_DEPLOY {
		n.rn.Release = r.r.GetReleaseId()
		n.rn.Error = ""
		n.rn.PreviousRelease = ""
	}
	n.sess = s
	s.active[aid] = n
	e.assignments[aid] = n
	e.markNode(n)
	n.span = e.startNodeSpan(r, n, false)
	n.span.SetAttributes(attrGateway.String(s.name), attrAssignment.String(aid))
	st := r.r.GetStages()[n.stage]
	msg := &outpostv1.Assignment{
		AssignmentId:   aid,
		RolloutId:      r.id(),
		Epoch:          e.cfg.Epoch,
		Node:           n.node,
		Release:        r.release(),
		Deploy:         r.r.GetDeploy(),
		TraceContext:   traceContext(n.span),
		Owner:          e.cfg.ReplicaName + "/" + r.id(),
		Stage:          st.GetName(),
		Batch:          int32(n.batch),
		Kind:           kind,
		TakeoverLockOf: n.takeover,
	}
	switch kind {
	case outpostv1.AssignmentKind_ASSIGNMENT_KIND_ROLLBACK:
		msg.RollbackTo = n.rn.GetPreviousRelease()
	case outpostv1.AssignmentKind_ASSIGNMENT_KIND_RUN_HOOK:
		msg.Hook, msg.HookEnv = switchHook(r, n.rn.GetRollingBack())
	}
	e.sends = append(e.sends, send{n: n, s: s, msg: msg})
}

// release is what the rollout deploys, as assignments carry it.
func (r *run) release() *outpostv1.Release {
	return &outpostv1.Release{Id: r.r.GetReleaseId(), App: r.r.GetApp(), Artifact: r.r.GetArtifact()}
}

// isSwitch reports whether n is the switch node of a blue/green switch stage.
func (n *nodeRun) isSwitch() bool {
	return n.run.r.GetStages()[n.stage].GetKind() == outpostv1.StageKind_STAGE_KIND_SWITCH
}

// kind is what n's next assignment does.
func (n *nodeRun) kind() outpostv1.AssignmentKind {
	switch {
	case n.isSwitch():
		return outpostv1.AssignmentKind_ASSIGNMENT_KIND_RUN_HOOK
	case n.rn.GetRollingBack():
		return outpostv1.AssignmentKind_ASSIGNMENT_KIND_ROLLBACK
	}
	return outpostv1.AssignmentKind_ASSIGNMENT_KIND_DEPLOY
}
