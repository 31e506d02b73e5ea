package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/gateway/artifactcache"
	"github.com/outposthq/outpost/gateway/deployer"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// queueFactor times Concurrency is how many accepted assignments may wait
// for a slot; more are refused "at capacity".
const queueFactor = 4

// task is one accepted assignment.
type task struct {
	a   *outpostv1.Assignment
	log *slog.Logger

	// Guarded by Gateway.mu.
	started      bool
	cancel       context.CancelCauseFunc // set when started
	pastSwitch   bool                    // a switch (or later) step was seen: cancel no longer applies
	cancelReason string                  // set when the control plane cancelled it
}

// errCancelled is the cause of a deployment's context when the control
// plane cancelled the assignment.
var errCancelled = errors.New("cancelled by the control plane")

// errShuttingDown is the cause of a deployment's context when Run's ctx
// ended before the deployment reached the switch.
var errShuttingDown = errors.New("gateway is shutting down")

// accept answers an assignment and, when accepted, queues or starts it.
func (g *Gateway) accept(a *outpostv1.Assignment) *outpostv1.AssignmentAck {
	id := a.GetAssignmentId()
	refuse := func(reason string) *outpostv1.AssignmentAck {
		g.log.Warn("assignment refused", "assignment_id", id, "node_id", a.GetNode().GetId(), "reason", reason)
		return &outpostv1.AssignmentAck{AssignmentId: id, Reason: reason}
	}
	accepted := &outpostv1.AssignmentAck{AssignmentId: id, Accepted: true}
	switch {
	case a.GetNode() == nil || a.GetNode().GetId() == "":
		return refuse("invalid assignment: no node")
	case a.GetRelease() == nil || a.GetRelease().GetArtifact() == nil:
		return refuse("invalid assignment: no release artifact")
	case a.GetDeploy() == nil:
		return refuse("invalid assignment: no deploy spec")
	case a.GetRolloutId() == "":
		return refuse("invalid assignment: no rollout id")
	case a.GetNode().GetDatacenter() != g.cfg.Datacenter:
		return refuse(fmt.Sprintf("node %s is in datacenter %q; this gateway serves %q",
			a.GetNode().GetId(), a.GetNode().GetDatacenter(), g.cfg.Datacenter))
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.tasks[id] != nil || g.finished.has(id):
		// A re-delivery (for example after a reconnect): same answer, and
		// its events and result are on their way or already acknowledged.
		return accepted
	case g.closing:
		return refuse("gateway is shutting down")
	case a.GetEpoch() < g.epoch:
		return refuse(fmt.Sprintf("stale epoch %d; the current leader's is %d", a.GetEpoch(), g.epoch))
	case len(g.tasks) >= g.cfg.Concurrency*(1+queueFactor):
		return refuse(fmt.Sprintf("at capacity: %d assignments accepted", len(g.tasks)))
	}
	t := &task{a: a, log: g.log.With("assignment_id", id, "node_id", a.GetNode().GetId(), "rollout_id", a.GetRolloutId()).
		With(telemetry.LogArgs(assignmentContext(context.Background(), a))...)}
	g.tasks[id] = t
	g.queue = append(g.queue, t)
	t.log.Info("assignment accepted", "stage", a.GetStage(), "batch", a.GetBatch(), "release", a.GetRelease().GetId())
	g.startQueuedLocked()
	return accepted
}

// startQueuedLocked starts queued tasks while there are free slots.
func (g *Gateway) startQueuedLocked() {
	for g.active < g.cfg.Concurrency && len(g.queue) > 0 && !g.closing {
		t := g.queue[0]
		g.queue = g.queue[1:]
		// A deployment belongs to no stream and no request: it outlives
		// the stream it came on, and only its own cancel stops it.
		dctx, cancel := context.WithCancelCause(context.Background())
		t.started, t.cancel = true, cancel
		g.active++
		g.deployments.Add(1)
		go func() {
			defer g.deployments.Done()
			g.runTask(dctx, t)
		}()
	}
}

// cancelAssignment handles the control plane's cancel.
func (g *Gateway) cancelAssignment(c *outpostv1.AssignmentCancel) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.tasks[c.GetAssignmentId()]
	if t == nil {
		g.log.Debug("cancel for an unknown or finished assignment", "assignment_id", c.GetAssignmentId())
		return
	}
	switch {
	case !t.started:
		g.queue = slices.DeleteFunc(g.queue, func(q *task) bool { return q == t })
		delete(g.tasks, c.GetAssignmentId())
		g.finished.add(c.GetAssignmentId())
		t.log.Info("assignment cancelled before it started", "reason", c.GetReason())
		g.out.addResult(&outpostv1.NodeResult{
			AssignmentId: t.a.GetAssignmentId(),
			NodeId:       t.a.GetNode().GetId(),
			State:        outpostv1.NodeState_NODE_STATE_FAILED,
			Error:        fmt.Sprintf("cancelled before it started: %s", c.GetReason()),
			Duration:     durationpb.New(0),
		})
	case t.pastSwitch:
		t.log.Warn("cancel ignored: the node is past the switch; letting it finish", "reason", c.GetReason())
	case t.cancelReason == "":
		t.cancelReason = c.GetReason()
		t.log.Info("cancelling deployment", "reason", c.GetReason())
		t.cancel(fmt.Errorf("%w: %s", errCancelled, c.GetReason()))
	}
}

// beginShutdown stops new work when Run's ctx ends: queued assignments are
// dropped, and deployments not yet past the switch are cancelled (the
// deployer cleans up or rolls back); the rest finish.
func (g *Gateway) beginShutdown() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closing = true
	g.dropQueuedLocked("gateway is shutting down")
	for _, t := range g.tasks {
		if t.started && !t.pastSwitch {
			t.cancel(errShuttingDown)
		}
	}
}

// dropQueued forgets accepted assignments that have not started; they are
// left out of the next hello, so the control plane hands them out again.
func (g *Gateway) dropQueued(why string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dropQueuedLocked(why)
}

func (g *Gateway) dropQueuedLocked(why string) {
	for _, t := range g.queue {
		delete(g.tasks, t.a.GetAssignmentId())
		t.log.Info("queued assignment dropped", "reason", why)
	}
	g.queue = nil
}

// activeIDs lists, for the hello, the assignments deploying now and those
// whose result the control plane has not acknowledged: the result follows
// the hello, and a control plane that did not know it (it restarted) must
// not hand the node out again meanwhile.
func (g *Gateway) activeIDs() []string {
	g.mu.Lock()
	var ids []string
	for id, t := range g.tasks {
		if t.started {
			ids = append(ids, id)
		}
	}
	g.mu.Unlock()
	// Read after the tasks: runTask queues a result before it forgets the
	// task, so a deployment finishing meanwhile is in one list or both.
	ids = append(ids, g.out.unackedResults()...)
	slices.Sort(ids)
	return slices.Compact(ids)
}

// activeCount is how many deployments run now.
func (g *Gateway) activeCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.active
}

// runTask deploys one assignment and queues its result.
func (g *Gateway) runTask(ctx context.Context, t *task) {
	a := t.a
	start := g.cfg.Now()
	g.met.inFlight.Inc()
	defer g.met.inFlight.Dec()
	// Join the node deployment's trace: the deployer's spans become
	// children of the control plane's node deployment span.
	ctx = assignmentContext(ctx, a)

	res := g.deployAssignment(ctx, t)

	g.mu.Lock()
	reason := t.cancelReason
	g.mu.Unlock()
	r := &outpostv1.NodeResult{
		AssignmentId:    a.GetAssignmentId(),
		NodeId:          a.GetNode().GetId(),
		State:           res.State,
		Step:            res.Step,
		Release:         res.Release,
		PreviousRelease: res.Previous,
		Duration:        durationpb.New(g.cfg.Now().Sub(start)),
	}
	if res.Err != nil {
		r.Error = res.Err.Error()
		// The deployer usually names the cause already; when it only
		// says "context canceled", say whose cancel it was.
		if reason != "" && !strings.Contains(r.Error, errCancelled.Error()) {
			r.Error = fmt.Sprintf("%v (%s): %s", errCancelled, reason, r.Error)
		}
	}
	dc := a.GetNode().GetDatacenter()
	if dc == "" {
		dc = g.cfg.Datacenter
	}
	g.met.node.ObserveDeployment(a.GetRelease().GetApp(), dc, res.State, r.GetDuration().AsDuration().Seconds())
	t.log.Info("assignment finished", "state", res.State.String(), "step", res.Step.String(), "duration", r.GetDuration().AsDuration())

	// A deployment stopped by this gateway's shutdown before it touched the
	// node is not the node's failure: no result, so the control plane
	// hands the node out again once this stream ends (at once when the
	// gateway comes back without it, else after its orphan grace).
	if res.State == outpostv1.NodeState_NODE_STATE_FAILED && reason == "" && errors.Is(context.Cause(ctx), errShuttingDown) {
		t.log.Info("deployment interrupted by shutdown; the node is as it was and will be assigned again")
	} else {
		// The result goes into the outbox before the task is forgotten, so
		// a hello never omits an assignment whose result is not queued.
		g.out.addResult(r)
	}
	g.mu.Lock()
	delete(g.tasks, a.GetAssignmentId())
	g.finished.add(a.GetAssignmentId())
	g.active--
	g.startQueuedLocked()
	g.mu.Unlock()
}

// deployAssignment fetches the artifact and runs the deployer.
func (g *Gateway) deployAssignment(ctx context.Context, t *task) deployer.Result {
	a := t.a
	emit := func(ev *outpostv1.NodeStepEvent) {
		if ev.GetStep() >= outpostv1.Step_STEP_SWITCH {
			g.mu.Lock()
			t.pastSwitch = true
			g.mu.Unlock()
		}
		g.met.node.ObserveStep(ev)
		g.out.addEvent(a.GetAssignmentId(), ev)
	}
	ctx, cancel, err := g.withCertificate(ctx, a)
	if err != nil {
		// Reported as the connect step: the node has not been touched.
		return g.failBeforeNode(a, outpostv1.Step_STEP_CONNECT, "preparing the SSH certificate", err, emit)
	}
	defer cancel()
	if !isDeploy(a) {
		return g.runOther(ctx, a, emit)
	}
	job, err := jobOf(a, g.cfg.Name)
	if err != nil {
		return deployer.Result{State: outpostv1.NodeState_NODE_STATE_FAILED, Err: err}
	}
	pin, err := g.fetchArtifact(ctx, a)
	if err != nil {
		// Reported as the upload step: the node has not been touched.
		return g.failBeforeNode(a, outpostv1.Step_STEP_UPLOAD, "fetching the artifact from the control plane", err, emit)
	}
	// The artifact, and the delta bases the deployer asks for, stay in
	// the cache until the deployment is over.
	defer pin.Release()
	bases := &basePins{cache: g.cache}
	defer bases.release()
	signer, err := g.checkSignature(ctx, a, pin.Path())
	if err != nil {
		t.log.Warn("deployment refused before the node was dialled", "error", err)
		return g.failBeforeNode(a, outpostv1.Step_STEP_UPLOAD, "verifying the artifact's signature", err, emit)
	}
	if signer != "" {
		t.log.Info("artifact signature verified", "signer", signer)
	}
	job.ArtifactPath = pin.Path()
	job.Base = bases.get
	return g.deploy.Deploy(ctx, job, emit)
}

// failBeforeNode reports a's step as started and failed with err, for a
// failure on the gateway before anything reached the node.
func (g *Gateway) failBeforeNode(a *outpostv1.Assignment, step outpostv1.Step, detail string, err error, emit func(*outpostv1.NodeStepEvent)) deployer.Result {
	now := timestamppb.New(g.cfg.Now())
	base := &outpostv1.NodeStepEvent{NodeId: a.GetNode().GetId(), RolloutId: a.GetRolloutId(), Step: step, Time: now}
	started := cloneEvent(base, outpostv1.StepPhase_STEP_PHASE_STARTED, 1)
	started.Detail = detail
	emit(started)
	failed := cloneEvent(base, outpostv1.StepPhase_STEP_PHASE_FAILED, 2)
	failed.Duration, failed.Error = durationpb.New(0), err.Error()
	emit(failed)
	return deployer.Result{State: outpostv1.NodeState_NODE_STATE_FAILED, Step: step, Err: err}
}

func cloneEvent(ev *outpostv1.NodeStepEvent, phase outpostv1.StepPhase, seq uint64) *outpostv1.NodeStepEvent {
	return &outpostv1.NodeStepEvent{NodeId: ev.NodeId, RolloutId: ev.RolloutId, Step: ev.Step, Time: ev.Time, Phase: phase, Seq: seq}
}

// fetchArtifact returns the local copy of a's artifact, pinned, in its own
// span.
func (g *Gateway) fetchArtifact(ctx context.Context, a *outpostv1.Assignment) (*artifactcache.Pin, error) {
	digest := a.GetRelease().GetArtifact().GetSha256()
	ctx, span := g.tracer.Start(ctx, "gateway.fetch_artifact", trace.WithAttributes(
		telemetry.AttrNodeID.String(a.GetNode().GetId()),
		telemetry.AttrArtifact.String(digest),
	))
	defer span.End()
	pin, err := g.cache.Get(ctx, digest)
	if err != nil {
		telemetry.Fail(span, err)
		return nil, fmt.Errorf("fetch artifact: %w", err)
	}
	return pin, nil
}

// jobOf turns an assignment into a deployer job (without the artifact
// path, which the cache provides).
func jobOf(a *outpostv1.Assignment, gatewayName string) (deployer.Job, error) {
	spec, err := deployer.SpecFromProto(a.GetDeploy())
	if err != nil {
		return deployer.Job{}, fmt.Errorf("deploy spec: %w", err)
	}
	owner := a.GetOwner()
	if owner == "" {
		owner = gatewayName
	}
	return deployer.Job{
		Node:      a.GetNode(),
		Release:   a.GetRelease(),
		Spec:      spec,
		RolloutID: a.GetRolloutId(),
		Owner:     owner,
		Epoch:     a.GetEpoch(),
		// The lock names the assignment, so that the control plane can
		// hand the node to another gateway with leave to take it over.
		AssignmentID:   a.GetAssignmentId(),
		TakeoverLockOf: a.GetTakeoverLockOf(),
	}, nil
}

// recentSet remembers the last n ids added, to answer re-delivered
// assignments without deploying them twice.
type recentSet struct {
	ids   map[string]bool
	order []string
	n     int
}

func newRecentSet(n int) recentSet {
	return recentSet{ids: make(map[string]bool), n: n}
}

func (s *recentSet) has(id string) bool { return s.ids[id] }

func (s *recentSet) add(id string) {
	if s.ids[id] {
		return
	}
	s.ids[id] = true
	s.order = append(s.order, id)
	if len(s.order) > s.n {
		delete(s.ids, s.order[0])
		s.order = s.order[1:]
	}
}

// assignmentContext is ctx with the remote parent span a carries (the
// control plane's node deployment span), if any.
func assignmentContext(ctx context.Context, a *outpostv1.Assignment) context.Context {
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier(a.GetTraceContext()))
}
