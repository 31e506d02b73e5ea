package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/clock"
	"github.com/outposthq/outpost/internal/rolloutstate"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Defaults for Config.
const (
	DefaultGatewayWaitLog    = 30 * time.Second
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultOrphanGrace       = 30 * time.Second
	DefaultCapacity          = 10
	// presenceTTL is the lease TTL of gateway presence keys: they vanish
	// this long after the leader dies without cleaning up.
	presenceTTL = 10
	// tickInterval paces timers (orphan grace, commit retries, delayed acks).
	tickInterval = 100 * time.Millisecond
	// ackDelay bounds how long a sequence ack waits for a write to ride on.
	ackDelay = 50 * time.Millisecond
	// progressInterval is how often, at most, a running node's record is
	// written for its progress alone (step and phase). Writing every step
	// event cost 8.5 etcd puts per node in a 1,000-node rollout; live
	// step events reach watchers without etcd, and a state change is
	// always written at once.
	progressInterval = 5 * time.Second
	// DefaultRefuseBackoff keeps the engine from re-offering work to a
	// gateway that just refused an assignment.
	DefaultRefuseBackoff = time.Second
	// maxRefusals fails a node whose assignment gateways refused this
	// many times.
	maxRefusals = 5
	// stopTimeout bounds the final flush when the engine stops.
	stopTimeout = 5 * time.Second
	// DefaultApprovalTTL is how long an approval stays good for a rollout
	// that has not started.
	DefaultApprovalTTL = 24 * time.Hour
)

// Errors returned by the engine's API methods.
var (
	// ErrStopped: the engine is not running (this replica is not, or no
	// longer, the leader).
	ErrStopped = errors.New("rollout engine stopped")
	// ErrNotFound: no such rollout.
	ErrNotFound = errors.New("rollout not found")
)

// StateError is a verb refused because of the rollout's state: "rollout
// r-00000012 is RUNNING; approve applies only to PENDING_APPROVAL".
type StateError struct {
	ID    string
	State outpostv1.RolloutState
	// Stage describes the current stage when the verb depends on it
	// ("stage canary RUNNING"); "" otherwise.
	Stage string
	Verb  string
	// AppliesTo says what the verb applies to ("PENDING_APPROVAL").
	AppliesTo string
}

func (e *StateError) Error() string {
	state := rolloutstate.Name(e.State)
	if e.Stage != "" {
		state += " (" + e.Stage + ")"
	}
	return fmt.Sprintf("rollout %s is %s; %s applies only to %s", e.ID, state, e.Verb, e.AppliesTo)
}

// EventSink receives every step event the engine applies, for live
// fan-out to watchers on this replica and the audit log; gateway is the
// gateway that reported it. Publish runs on the engine's loop with its
// context: it may wait for the audit log's queue (back-pressure) but must
// return when ctx ends, and must not call the engine.
type EventSink interface {
	Publish(ctx context.Context, rolloutID, gateway string, ev *outpostv1.NodeStepEvent)
}

// Config configures an Engine for one leadership term.
type Config struct {
	// Store is the etcd store (required).
	Store *store.Store
	// Fence guards every write (required): the term's leadership.
	Fence store.Fence
	// Epoch is the leadership term's epoch, sent to gateways (required, > 0).
	Epoch int64
	// ReplicaName names this control plane in lock owners and logs (required).
	ReplicaName string
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// TracerProvider; nil means the otel global.
	TracerProvider trace.TracerProvider
	// Metrics; nil means no metrics.
	Metrics *Metrics
	// Events receives step events for live watchers; nil means none.
	Events EventSink
	// Clock paces every ticker and timer of the engine and its gateway
	// sessions and stamps its records; nil means clock.Real.
	Clock clock.Clock
	// GatewayWaitLog is how often "waiting for a gateway in datacenter X"
	// is logged again; 0 means DefaultGatewayWaitLog.
	GatewayWaitLog time.Duration
	// HeartbeatInterval is sent to gateways; a session is dropped after
	// three missed. 0 means DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// OrphanGrace is how long an assignment whose gateway disconnected
	// waits for that gateway to come back before it is handed to another
	// gateway of the datacenter. 0 means DefaultOrphanGrace.
	OrphanGrace time.Duration
	// DefaultCapacity is a gateway's capacity when its hello says 0; 0
	// means DefaultCapacity.
	DefaultCapacity int
	// MaxPerDatacenter bounds the node deployments (and rollbacks) running
	// at once in one datacenter, over all its gateways and rollouts, so
	// that several gateways of a datacenter together do not open more
	// SSH connections into it than its servers and network take. 0 means
	// no bound beyond the gateways' own capacities.
	MaxPerDatacenter int
	// RefuseBackoff is how long a gateway that refused an assignment gets
	// no new ones; 0 means DefaultRefuseBackoff.
	RefuseBackoff time.Duration
	// ApprovalTTL is how long an approval holds for a rollout that has not
	// started (it waits for an earlier rollout of its app): after that it
	// goes back to PENDING_APPROVAL and needs approving again. 0 means
	// DefaultApprovalTTL.
	ApprovalTTL time.Duration
	// EnvironmentApprovalTTL overrides ApprovalTTL for the rollouts of the
	// named environments (plan.environment); nil means none.
	EnvironmentApprovalTTL map[string]time.Duration
	// AllowSelfApproval lets the requester approve their own rollout
	// (single-operator setups) in every environment; false enforces four
	// eyes except in SelfApprovalEnvironments.
	AllowSelfApproval bool
	// SelfApprovalEnvironments are the environments (plan.environment)
	// whose rollouts their requester may approve; nil means none.
	SelfApprovalEnvironments map[string]bool
	// OnRolloutState, when set, is called after a rollout's state change is
	// durably written, with the states before and after and the rollout's
	// message. OnNodeResult, when set, is called after a node reached a
	// final state (SUCCEEDED, FAILED, ROLLED_BACK, ROLLBACK_FAILED,
	// SKIPPED) and that is durably written. Both run on the engine's loop
	// with its context and get copies: they may wait while the audit log's
	// queue is full (back-pressure, which slows the rollout down) but must
	// return when ctx ends, and must not call the engine.
	OnRolloutState func(ctx context.Context, r *outpostv1.Rollout, from, to outpostv1.RolloutState, reason string)
	OnNodeResult   func(ctx context.Context, rolloutID string, n *outpostv1.RolloutNode)
	// Analysis runs canary analysis queries; nil means none is
	// configured: every measurement is inconclusive (the rollout pauses).
	Analysis Querier
	// OnAnalysis, when set, is called after an analysis outcome that acts
	// (outcome "failed" or "inconclusive") or a passed analysis is durable,
	// with the reason and a copy of the stage's measurements. It must not
	// call the engine.
	OnAnalysis func(ctx context.Context, r *outpostv1.Rollout, stage, outcome, message string, ms []*outpostv1.Measurement)
}

// CheckAndSetDefaults validates the config and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	switch {
	case c.Store == nil:
		return errors.New("rollout: Store is required")
	case c.Fence == nil:
		return errors.New("rollout: Fence is required")
	case c.Epoch <= 0:
		return fmt.Errorf("rollout: Epoch must be positive, got %d", c.Epoch)
	case c.ReplicaName == "":
		return errors.New("rollout: ReplicaName is required")
	case c.GatewayWaitLog < 0, c.HeartbeatInterval < 0, c.OrphanGrace < 0, c.DefaultCapacity < 0, c.RefuseBackoff < 0, c.ApprovalTTL < 0,
		c.MaxPerDatacenter < 0:
		return errors.New("rollout: negative durations or capacity")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.GatewayWaitLog == 0 {
		c.GatewayWaitLog = DefaultGatewayWaitLog
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.OrphanGrace == 0 {
		c.OrphanGrace = DefaultOrphanGrace
	}
	if c.DefaultCapacity == 0 {
		c.DefaultCapacity = DefaultCapacity
	}
	if c.RefuseBackoff == 0 {
		c.RefuseBackoff = DefaultRefuseBackoff
	}
	if c.ApprovalTTL == 0 {
		c.ApprovalTTL = DefaultApprovalTTL
	}
	return nil
}

// Engine drives rollouts for one leadership term. Create it with New, run
// it with Run; it cannot be restarted.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	tracer trace.Tracer

	reqs     chan func(context.Context)
	stopping chan struct{} // closed when Run starts to stop
	done     chan struct{} // closed when Run has returned

	// mu guards stopped and the Add side of handlers, so no gateway
	// handler starts after Run began waiting for them.
	mu       sync.Mutex
	stopped  bool
	handlers sync.WaitGroup

	// Everything below is owned by the loop goroutine.
	bw          *store.BatchWriter
	lease       clientv3.LeaseID
	runs        map[string]*run
	assignments map[string]*nodeRun // by assignment id
	gateways    map[string]*session // current session by gateway name
	orphans     map[*nodeRun]struct{}
	acked       map[string]uint64 // highest applied sequence by gateway name: durable but for running nodes' progress
	ackPending  map[string]uint64
	ackSince    time.Time // when the oldest pending ack arrived
	waitLogged  map[string]time.Time
	dirtyNodes  map[*nodeRun]struct{}
	dirtyRuns   map[*run]struct{}
	// progressed are running nodes whose progress changed since their
	// record was last written; tick moves them to dirtyNodes once
	// progressInterval has passed since that write.
	progressed  map[*nodeRun]struct{}
	sends       []send // assignments to send once durable
	afterCommit []func(error)
	assignSeq   int64
	lastErrLog  time.Time
	// checks are the bake health checks out at gateways, by assignment
	// id. They are not recorded in etcd: a new leader starts a new round.
	checks map[string]*check
	// noted are nodes written since the last notification, whose final
	// state OnNodeResult has not been told yet.
	noted map[*nodeRun]struct{}
}

// send is an assignment waiting for its node record to be durable.
type send struct {
	n   *nodeRun
	s   *session
	msg *outpostv1.Assignment
}

// New returns an engine; it does nothing until Run.
func New(cfg Config) (*Engine, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	return &Engine{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "rollout-engine", "epoch", cfg.Epoch),
		tracer:      cfg.TracerProvider.Tracer("github.com/outposthq/outpost/controlplane/rollout"),
		reqs:        make(chan func(context.Context), 256),
		stopping:    make(chan struct{}),
		done:        make(chan struct{}),
		runs:        map[string]*run{},
		assignments: map[string]*nodeRun{},
		gateways:    map[string]*session{},
		orphans:     map[*nodeRun]struct{}{},
		acked:       map[string]uint64{},
		ackPending:  map[string]uint64{},
		waitLogged:  map[string]time.Time{},
		dirtyNodes:  map[*nodeRun]struct{}{},
		dirtyRuns:   map[*run]struct{}{},
		progressed:  map[*nodeRun]struct{}{},
		checks:      map[string]*check{},
		noted:       map[*nodeRun]struct{}{},
	}, nil
}

// Done is closed when Run has returned.
func (e *Engine) Done() <-chan struct{} { return e.done }

// Run loads unfinished rollouts and drives them until ctx is done or a
// fenced write reports that leadership is lost. It then ends every gateway
// session, flushes what it can and waits for its goroutines. It returns
// nil when ctx ended it and store.ErrNotLeader when leadership was lost.
func (e *Engine) Run(ctx context.Context) (err error) {
	defer close(e.done)
	defer func() {
		e.mu.Lock()
		e.stopped = true
		e.mu.Unlock()
		close(e.stopping)
		e.stop()
		e.handlers.Wait()
	}()
	// Measurements (analysis.go) end with the term, before Run waits for them.
	ctx, endMeasurements := context.WithCancel(ctx)
	defer endMeasurements()

	e.bw = store.NewBatchWriter(e.cfg.Store, e.cfg.Fence, 0, 0)
	// The presence lease is etcd's own primitive, kept alive for this
	// term and revoked by stop; the store does not wrap leases.
	lease, err := e.cfg.Store.Client().Grant(ctx, presenceTTL)
	if err != nil {
		return fmt.Errorf("rollout: grant presence lease: %w", err)
	}
	e.lease = lease.ID
	ka, err := e.cfg.Store.Client().KeepAlive(ctx, lease.ID)
	if err != nil {
		return fmt.Errorf("rollout: keep presence lease alive: %w", err)
	}

	// Watch before listing, so a rollout created in between is seen by
	// one or the other (a duplicate is ignored).
	head, err := e.cfg.Store.Revision(ctx)
	if err != nil {
		return fmt.Errorf("rollout: %w", err)
	}
	watch, stopWatch := e.watchRevisions(ctx, head+1)
	defer func() { stopWatch() }()
	if err := e.loadAll(ctx); err != nil {
		return err
	}
	e.log.Info("rollout engine started", "rollouts", len(e.runs))

	tick := e.cfg.Clock.NewTicker(tickInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-e.reqs:
			f(ctx)
			// Run what else is queued so one commit covers it all.
			e.drain(ctx)
		case wr, ok := <-watch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("rollout: revisions watch ended")
			}
			if err := wr.Err(); err != nil {
				// Compaction or a lost etcd leader: catch up by listing.
				e.log.Warn("revisions watch failed, re-listing", "err", err)
				head, gerr := e.cfg.Store.Revision(ctx)
				if gerr != nil {
					return fmt.Errorf("rollout: %w", gerr)
				}
				stopWatch()
				watch, stopWatch = e.watchRevisions(ctx, head+1)
				if err := e.loadAll(ctx); err != nil {
					return err
				}
				break
			}
			for _, ev := range wr.Events {
				e.onRevisionEvent(ctx, ev)
			}
		case _, ok := <-ka:
			if !ok && ctx.Err() == nil {
				return errors.New("rollout: presence lease lost")
			}
		case <-tick.C():
			e.tick()
			e.analysisTick(ctx, e.cfg.Clock.Now())
		}
		e.advanceAll()
		e.dispatch()
		if err := e.commit(ctx); err != nil {
			if errors.Is(err, store.ErrNotLeader) {
				e.log.Warn("leadership lost: a fenced write was refused")
				return err
			}
			if ctx.Err() != nil {
				return nil
			}
			if now := e.cfg.Clock.Now(); now.Sub(e.lastErrLog) > time.Second {
				e.lastErrLog = now
				e.log.Warn("writing rollout state failed; will retry", "err", err)
			}
		}
	}
}

// watchRevisions watches the revision records from rev on.
func (e *Engine) watchRevisions(ctx context.Context, rev int64) (clientv3.WatchChan, context.CancelFunc) {
	wctx, cancel := context.WithCancel(ctx)
	return e.cfg.Store.Watch(wctx, store.RevisionsRoot, rev), cancel
}

// stop ends sessions and spans and writes what is pending, best effort.
func (e *Engine) stop() {
	for _, s := range e.gateways {
		s.link.Close(ErrLeadershipEnded)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if e.bw != nil {
		// Hand the next leader the latest progress too.
		for n := range e.progressed {
			e.dirtyNodes[n] = struct{}{}
		}
		if err := e.commit(ctx); err != nil && !errors.Is(err, store.ErrNotLeader) {
			e.log.Warn("final write of rollout state failed", "err", err)
		}
		if err := e.bw.Close(ctx); err != nil && !errors.Is(err, store.ErrNotLeader) && !errors.Is(err, store.ErrClosed) {
			e.log.Warn("closing the batch writer failed", "err", err)
		}
	}
	for _, f := range e.afterCommit {
		f(ErrStopped)
	}
	e.afterCommit = nil
	for _, r := range e.runs {
		r.endSpans("leadership ended")
	}
	if e.lease != 0 {
		if _, err := e.cfg.Store.Client().Revoke(ctx, e.lease); err != nil {
			e.log.Debug("revoking the presence lease failed", "err", err)
		}
	}
	if m := e.cfg.Metrics; m != nil {
		m.Gateways.Reset()
	}
}

// drain runs the closures already queued, up to the queue's size.
func (e *Engine) drain(ctx context.Context) {
	for i := 0; i < cap(e.reqs); i++ {
		select {
		case f := <-e.reqs:
			f(ctx)
		default:
			return
		}
	}
}

// do runs f on the loop and waits for it; f runs before the next commit
// and gets the loop's context.
func (e *Engine) do(ctx context.Context, f func(context.Context)) error {
	ran := make(chan struct{})
	select {
	case e.reqs <- func(lctx context.Context) { f(lctx); close(ran) }:
	case <-e.stopping:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ran:
		return nil
	case <-e.stopping:
		// Run may still execute queued closures during stop; f is then
		// simply not waited for.
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// doDurable runs f on the loop and waits until the commit after it: f's
// changes are in etcd when it returns nil. f returns the value to report.
func (e *Engine) doDurable(ctx context.Context, f func(context.Context) (any, error)) (any, error) {
	type result struct {
		v   any
		err error
	}
	res := make(chan result, 1)
	err := e.do(ctx, func(lctx context.Context) {
		v, err := f(lctx)
		if err != nil {
			res <- result{err: err}
			return
		}
		e.afterCommit = append(e.afterCommit, func(cerr error) { res <- result{v: v, err: cerr} })
	})
	if err != nil {
		return nil, err
	}
	select {
	case r := <-res:
		return r.v, r.err
	case <-e.done:
		select {
		case r := <-res:
			return r.v, r.err
		default:
			return nil, ErrStopped
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// tick handles what is due by time.
func (e *Engine) tick() {
	now := e.cfg.Clock.Now()
	e.expireApprovals(now)
	e.bakeTick(now)
	for n := range e.progressed {
		if now.Sub(n.written) >= progressInterval {
			e.dirtyNodes[n] = struct{}{}
		}
	}
	for n := range e.orphans {
		if !now.Before(n.orphanDeadline) {
			e.log.Info("gateway did not come back for its assignment; re-queuing the node",
				"rollout", n.run.id(), "node", n.id(), telemetry.LogTraceID, n.rn.GetTraceId(), "gateway", n.rn.GetGateway(), "assignment", n.rn.GetAssignmentId())
			e.requeue(n, "gateway "+n.rn.GetGateway()+" disconnected", true)
		}
	}
}

// commit writes dirty node records through the batch writer and, when
// anything needs to be durable now (rollout records, assignments to send,
// acks, API calls waiting), flushes and writes rollout records in one
// fenced transaction. Then it sends what waited for durability.
func (e *Engine) commit(ctx context.Context) error {
	now := e.cfg.Clock.Now()
	var activations []*nodeRun
	for n := range e.dirtyNodes {
		n.rn.UpdateTime = timestamppb.New(now)
		if n.activated() {
			activations = append(activations, n) // written with its desired release below
		} else {
			e.bw.Put(store.RolloutNodeKey(n.run.id(), n.id()), n.rn)
		}
		n.written = now
		delete(e.progressed, n)
		if rolloutstate.NodeFinal(n.rn.GetState()) && n.rn.GetState() != n.notified {
			e.noted[n] = struct{}{}
		}
	}
	clear(e.dirtyNodes)
	acksDue := len(e.ackPending) > 0 && now.Sub(e.ackSince) >= ackDelay
	if len(e.dirtyRuns) == 0 && len(e.sends) == 0 && len(e.afterCommit) == 0 && !acksDue && len(activations) == 0 {
		return nil
	}
	// The batch may hold an older put of an activated node's record: it
	// lands first.
	if err := e.bw.Flush(ctx); err != nil {
		return e.failCommit(e.redo(activations, err))
	}
	// Should two rollouts activate one node in a commit, the newer
	// (higher id) is written last and stays.
	sort.Slice(activations, func(i, j int) bool {
		a, b := activations[i], activations[j]
		return a.run.id() < b.run.id() || a.run.id() == b.run.id() && a.id() < b.id()
	})
	if err := e.writeActivations(ctx, activations); err != nil {
		return e.failCommit(err)
	}
	var changes []stateChange
	if len(e.dirtyRuns) > 0 {
		runs := make([]*run, 0, len(e.dirtyRuns))
		for r := range e.dirtyRuns {
			runs = append(runs, r)
		}
		sort.Slice(runs, func(i, j int) bool { return runs[i].id() < runs[j].id() })
		var ops []clientv3.Op
		for _, r := range runs {
			r.recount()
			r.r.UpdateTime = timestamppb.New(now)
			op, err := store.OpPut(store.RolloutKey(r.id()), r.r)
			if err != nil {
				return e.failCommit(err)
			}
			ops = append(ops, op)
			// The revision record repeats the rollout's state, nothing
			// that changes with node progress.
			if r.r.GetState() != r.revState {
				rev, err := store.OpPut(store.RevisionKey(r.r.GetApp(), r.r.GetRevision()), RevisionOf(r.r))
				if err != nil {
					return e.failCommit(err)
				}
				ops = append(ops, rev)
			}
		}
		if err := e.cfg.Store.Txn(ctx, e.cfg.Fence, ops...); err != nil {
			return e.failCommit(err)
		}
		for _, r := range runs {
			if st := r.r.GetState(); st != r.revState {
				changes = append(changes, stateChange{r: proto.CloneOf(r.r), from: r.revState})
			}
			r.revState = r.r.GetState()
			e.afterWrite(r)
		}
		clear(e.dirtyRuns)
	}
	e.notify(ctx, changes)
	for _, s := range e.sends {
		// The node may have been re-queued or the session replaced since.
		if s.n.sess == s.s && s.n.rn.GetAssignmentId() == s.msg.GetAssignmentId() {
			s.s.link.Assign(s.msg)
		}
	}
	e.sends = e.sends[:0]
	for name, seq := range e.ackPending {
		e.acked[name] = max(e.acked[name], seq)
		if s := e.gateways[name]; s != nil {
			s.link.Ack(e.acked[name])
		}
	}
	clear(e.ackPending)
	for _, f := range e.afterCommit {
		f(nil)
	}
	e.afterCommit = e.afterCommit[:0]
	return nil
}

// failCommit reports err to API calls waiting for durability: they must
// not claim success. The loop retries the writes on its next tick.
func (e *Engine) failCommit(err error) error {
	for _, f := range e.afterCommit {
		f(err)
	}
	e.afterCommit = e.afterCommit[:0]
	return err
}

// afterWrite forgets a rollout that the engine no longer drives (it ended,
// waits for validation, or its approval expired) once that is written.
func (e *Engine) afterWrite(r *run) {
	if rolloutstate.Active(r.r.GetState()) {
		return
	}
	for _, n := range r.order {
		if aid := n.rn.GetAssignmentId(); aid != "" && e.assignments[aid] == n {
			delete(e.assignments, aid)
		}
		delete(e.orphans, n)
	}
	e.dropChecks(r)
	delete(e.runs, r.id())
	if m := e.cfg.Metrics; m != nil && rolloutstate.Terminal(r.r.GetState()) {
		m.RolloutsFinished.WithLabelValues(telemetry.RolloutStateValue(r.r.GetState())).Inc()
	}
}

// stateChange is a rollout state change written, for OnRolloutState.
type stateChange struct {
	r    *outpostv1.Rollout
	from outpostv1.RolloutState
}

// notify tells the hooks what the commit just made durable: every node
// write was flushed before the rollout records, so both are in etcd.
func (e *Engine) notify(ctx context.Context, changes []stateChange) {
	if f := e.cfg.OnNodeResult; f != nil {
		nodes := make([]*nodeRun, 0, len(e.noted))
		for n := range e.noted {
			nodes = append(nodes, n)
		}
		sort.Slice(nodes, func(i, j int) bool {
			if nodes[i].run.id() != nodes[j].run.id() {
				return nodes[i].run.id() < nodes[j].run.id()
			}
			return nodes[i].id() < nodes[j].id()
		})
		for _, n := range nodes {
			f(ctx, n.run.id(), proto.CloneOf(n.rn))
		}
	}
	for n := range e.noted {
		n.notified = n.rn.GetState()
	}
	clear(e.noted)
	if f := e.cfg.OnRolloutState; f != nil {
		for _, c := range changes {
			f(ctx, c.r, c.from, c.r.GetState(), c.r.GetMessage())
		}
	}
}

func (e *Engine) markNode(n *nodeRun) {
	e.dirtyNodes[n] = struct{}{}
	e.dirtyRuns[n.run] = struct{}{} // counts change with node states
}

func (e *Engine) markRun(r *run) { e.dirtyRuns[r] = struct{}{} }

// RevisionOf is the revision record of r.
func RevisionOf(r *outpostv1.Rollout) *outpostv1.Revision {
	return &outpostv1.Revision{
		App:            r.GetApp(),
		Revision:       r.GetRevision(),
		RolloutId:      r.GetId(),
		ReleaseId:      r.GetReleaseId(),
		Artifact:       r.GetArtifact(),
		State:          r.GetState(),
		CreateTime:     r.GetCreateTime(),
		Requester:      r.GetRequester(),
		SourceRevision: r.GetSourceRevision(),
	}
}
