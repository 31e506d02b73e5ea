package rollout

import (
	"log/slog"
	"testing"

	"github.com/outposthq/outpost/internal/clock"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

const (
	kindNone     = outpostv1.RolloutMessageKind_ROLLOUT_MESSAGE_KIND_UNSPECIFIED
	kindPaused   = outpostv1.RolloutMessageKind_ROLLOUT_MESSAGE_KIND_PAUSED
	kindRetrying = outpostv1.RolloutMessageKind_ROLLOUT_MESSAGE_KIND_RETRYING
)

// testEngine is an engine with no store and no loop, for the decisions
// made on a run in memory.
func testEngine() *Engine {
	return &Engine{
		cfg:        Config{Clock: clock.Real{}},
		log:        slog.New(slog.DiscardHandler),
		runs:       map[string]*run{},
		dirtyNodes: map[*nodeRun]struct{}{},
		dirtyRuns:  map[*run]struct{}{},
		checks:     map[string]*check{},
	}
}

// testRun is a rollout in state with one stage (of kind) holding nodes.
func testRun(state outpostv1.RolloutState, kind outpostv1.StageKind, nodes ...*outpostv1.RolloutNode) *run {
	st := &outpostv1.Stage{Name: "s", Kind: kind, State: outpostv1.StageState_STAGE_STATE_RUNNING}
	r := &run{
		r:          &outpostv1.Rollout{Id: "r-000001", State: state, Stages: []*outpostv1.Stage{st}},
		nodes:      map[string]*nodeRun{},
		stageNodes: [][]*nodeRun{nil},
	}
	for _, rn := range nodes {
		n := &nodeRun{run: r, rn: rn}
		r.nodes[rn.GetNodeId()] = n
		r.order = append(r.order, n)
		r.stageNodes[0] = append(r.stageNodes[0], n)
	}
	return r
}

func TestResumeClearsThePauseMessageByKind(t *testing.T) {
	tests := []struct {
		name string
		kind outpostv1.RolloutMessageKind
		msg  string
		want string
	}{
		{"paused by request", kindPaused, "paused: lunch", ""},
		{"pause worded otherwise", kindPaused, "on hold: lunch", ""},
		{"other message that reads like a pause", kindNone, "paused nodes of tier2 need a look", "paused nodes of tier2 need a look"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEngine()
			r := testRun(outpostv1.RolloutState_ROLLOUT_STATE_PAUSED, outpostv1.StageKind_STAGE_KIND_DEPLOY)
			r.setMessageOf(tt.kind, tt.msg)
			if err := e.resume(r); err != nil {
				t.Fatal(err)
			}
			if r.r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_RUNNING || r.r.GetMessage() != tt.want {
				t.Fatalf("after resume: %v %q, want RUNNING %q", r.r.GetState(), r.r.GetMessage(), tt.want)
			}
			if r.r.GetMessage() == "" && r.r.GetMessageKind() != kindNone {
				t.Fatalf("cleared message keeps kind %v", r.r.GetMessageKind())
			}
		})
	}
}

func TestSucceedClearsTheRetryMessageByKind(t *testing.T) {
	tests := []struct {
		name string
		kind outpostv1.RolloutMessageKind
		msg  string
		want string
	}{
		{"retry", kindRetrying, "retrying 2 failed node(s)", ""},
		{"other message that reads like a retry", kindNone, "retrying 2 failed node(s) is what the operator asked for", "retrying 2 failed node(s) is what the operator asked for"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEngine()
			r := testRun(outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, outpostv1.StageKind_STAGE_KIND_DEPLOY,
				&outpostv1.RolloutNode{NodeId: "n1", State: outpostv1.NodeState_NODE_STATE_SUCCEEDED})
			r.setMessageOf(tt.kind, tt.msg)
			e.succeed(r)
			if r.r.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED || r.r.GetMessage() != tt.want {
				t.Fatalf("after succeed: %v %q, want SUCCEEDED %q", r.r.GetState(), r.r.GetMessage(), tt.want)
			}
		})
	}
}

func TestSetMessageResetsTheKind(t *testing.T) {
	// A message that replaces a pause is not a pause: resume must keep it.
	r := testRun(outpostv1.RolloutState_ROLLOUT_STATE_PAUSED, outpostv1.StageKind_STAGE_KIND_DEPLOY)
	r.setMessageOf(kindPaused, "paused: lunch")
	r.setMessage("stage s: 3 of 10 nodes failed")
	if r.r.GetMessageKind() != kindNone {
		t.Fatalf("kind %v after a plain message, want UNSPECIFIED", r.r.GetMessageKind())
	}
}

func TestUpgradeMessageKind(t *testing.T) {
	// Records written before message_kind existed carry only the words.
	tests := []struct {
		state outpostv1.RolloutState
		kind  outpostv1.RolloutMessageKind
		msg   string
		want  outpostv1.RolloutMessageKind
	}{
		{outpostv1.RolloutState_ROLLOUT_STATE_PAUSED, kindNone, "paused", kindPaused},
		{outpostv1.RolloutState_ROLLOUT_STATE_PAUSED, kindNone, "paused: lunch", kindPaused},
		{outpostv1.RolloutState_ROLLOUT_STATE_PAUSED, kindNone, "stage s is done; waiting for promotion (outpost rollout promote r-000001)", kindNone},
		{outpostv1.RolloutState_ROLLOUT_STATE_PAUSED, kindNone, "pausedxyz", kindNone},
		{outpostv1.RolloutState_ROLLOUT_STATE_PAUSED, kindNone, "", kindNone},
		{outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, kindNone, "retrying 2 failed node(s)", kindRetrying},
		{outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, kindNone, "paused: lunch", kindNone},
		{outpostv1.RolloutState_ROLLOUT_STATE_ABORTED, kindNone, "retrying 2 failed node(s)", kindNone},
		// A record with the field is never second-guessed from its words.
		{outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, kindRetrying, "anything", kindRetrying},
		{outpostv1.RolloutState_ROLLOUT_STATE_PAUSED, kindPaused, "on hold", kindPaused},
	}
	for _, tt := range tests {
		r := &outpostv1.Rollout{State: tt.state, MessageKind: tt.kind, Message: tt.msg}
		upgradeMessageKind(r)
		if r.GetMessageKind() != tt.want || r.GetMessage() != tt.msg {
			t.Errorf("upgrade(%v, %v, %q) = %v %q, want %v", tt.state, tt.kind, tt.msg, r.GetMessageKind(), r.GetMessage(), tt.want)
		}
	}
}

func TestSetNodeWaiting(t *testing.T) {
	wait := WaitMessage("dc1")
	tests := []struct {
		name      string
		node      *outpostv1.RolloutNode
		wantError string
		wantDirty bool
	}{
		{"deploy", &outpostv1.RolloutNode{NodeId: "n1"}, wait, true},
		{"rollback keeps its reason",
			&outpostv1.RolloutNode{NodeId: "n1", RollingBack: true, Error: "stage s: bake failed on n2"},
			"stage s: bake failed on n2", true},
		{"error with the wait's words, not waiting",
			&outpostv1.RolloutNode{NodeId: "n1", Error: wait},
			wait, true},
		{"already waiting",
			&outpostv1.RolloutNode{NodeId: "n1", Error: wait, WaitingForGateway: true},
			wait, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.node.State, tt.node.Datacenter = outpostv1.NodeState_NODE_STATE_PENDING, "dc1"
			e := testEngine()
			r := testRun(outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, outpostv1.StageKind_STAGE_KIND_DEPLOY, tt.node)
			n := r.order[0]
			e.setNodeWaiting(n, "dc1")
			_, dirty := e.dirtyNodes[n]
			if !n.rn.GetWaitingForGateway() || n.rn.GetError() != tt.wantError || dirty != tt.wantDirty {
				t.Fatalf("waiting %v, error %q, dirty %v; want true, %q, %v",
					n.rn.GetWaitingForGateway(), n.rn.GetError(), dirty, tt.wantError, tt.wantDirty)
			}
		})
	}
}

func TestRolledBackErrorKeepsTheReason(t *testing.T) {
	tests := []struct {
		name  string
		kind  outpostv1.StageKind
		why   string
		waits bool // no gateway while the rollback was queued
		want  string
	}{
		{"bake", outpostv1.StageKind_STAGE_KIND_DEPLOY, "stage s: bake failed on n2", false,
			"stage s: bake failed on n2; rolled back to its previous release rel-1"},
		{"bake after a gateway wait", outpostv1.StageKind_STAGE_KIND_DEPLOY, "stage s: bake failed on n2", true,
			"stage s: bake failed on n2; rolled back to its previous release rel-1"},
		{"bake reason that ends like a switch", outpostv1.StageKind_STAGE_KIND_DEPLOY, "health: app said: draining; rolling back", false,
			"health: app said: draining; rolling back; rolled back to its previous release rel-1"},
		{"switch", outpostv1.StageKind_STAGE_KIND_SWITCH, "traffic switch to green failed on n1: exit 1; rolling back", false,
			"traffic switch to green failed on n1: exit 1; rolled back to traffic to blue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEngine()
			rn := &outpostv1.RolloutNode{NodeId: "n1", Datacenter: "dc1", State: outpostv1.NodeState_NODE_STATE_PENDING,
				RollingBack: true, Error: tt.why, PreviousRelease: "rel-1"}
			r := testRun(outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, tt.kind, rn)
			r.r.BlueGreen = &outpostv1.BlueGreen{TargetColor: "green", LiveColor: "blue"}
			n := r.order[0]
			if tt.waits {
				e.setNodeWaiting(n, "dc1")
			}
			rn.State = outpostv1.NodeState_NODE_STATE_RUNNING
			state, msg := e.applyAuxResult(n, outpostv1.NodeState_NODE_STATE_SUCCEEDED, "", nil)
			if state != outpostv1.NodeState_NODE_STATE_ROLLED_BACK || msg != tt.want {
				t.Fatalf("got %v %q, want ROLLED_BACK %q", state, msg, tt.want)
			}
		})
	}
}
