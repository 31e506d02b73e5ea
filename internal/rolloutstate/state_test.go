package rolloutstate

import (
	"strings"
	"testing"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestRolloutStates classifies every rollout state of the API. A state
// added to the proto fails here until it is classified.
func TestRolloutStates(t *testing.T) {
	type class struct{ active, terminal, finished, deployed bool }
	tests := map[outpostv1.RolloutState]class{
		outpostv1.RolloutState_ROLLOUT_STATE_UNSPECIFIED:        {},
		outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL:   {},
		outpostv1.RolloutState_ROLLOUT_STATE_APPROVED:           {active: true},
		outpostv1.RolloutState_ROLLOUT_STATE_RUNNING:            {active: true},
		outpostv1.RolloutState_ROLLOUT_STATE_PAUSED:             {active: true},
		outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED:          {terminal: true, finished: true, deployed: true},
		outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION: {finished: true, deployed: true},
		outpostv1.RolloutState_ROLLOUT_STATE_VALIDATED:          {terminal: true, finished: true, deployed: true},
		outpostv1.RolloutState_ROLLOUT_STATE_ABORTED:            {terminal: true, finished: true},
		outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK: {terminal: true, finished: true},
		outpostv1.RolloutState_ROLLOUT_STATE_REJECTED:           {terminal: true, finished: true},
	}
	for v, name := range outpostv1.RolloutState_name {
		s := outpostv1.RolloutState(v)
		want, ok := tests[s]
		if !ok {
			t.Errorf("%s is not classified: add it to this table and to every function of the package", name)
			continue
		}
		got := class{active: Active(s), terminal: Terminal(s), finished: Finished(s), deployed: Deployed(s)}
		if got != want {
			t.Errorf("%s: got %+v, want %+v", name, got, want)
		}
		// Every state but UNSPECIFIED is driven by the engine, waits for
		// a person, or has ended: exactly one.
		waits := s == outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL || s == outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION
		if n := count(Active(s), waits, Terminal(s)); s != outpostv1.RolloutState_ROLLOUT_STATE_UNSPECIFIED && n != 1 {
			t.Errorf("%s is in %d of active, waiting for a person and terminal, want exactly 1", name, n)
		}
		if Terminal(s) && !Finished(s) {
			t.Errorf("%s is terminal but not finished", name)
		}
		if Deployed(s) && !Finished(s) {
			t.Errorf("%s is deployed but not finished", name)
		}
		if got := Name(s); got != strings.TrimPrefix(name, "ROLLOUT_STATE_") || strings.Contains(got, "ROLLOUT_STATE") {
			t.Errorf("Name(%s) = %q", name, got)
		}
		if back, ok := ParseName(Name(s)); !ok || back != s {
			t.Errorf("ParseName(Name(%s)) = %v, %v", name, back, ok)
		}
	}
	if len(tests) != len(outpostv1.RolloutState_name) {
		t.Errorf("the table has %d states, the API %d: remove the ones the API dropped", len(tests), len(outpostv1.RolloutState_name))
	}
}

// TestUnknownRolloutState: a state newer than this code (from a newer
// control plane) is in no class, so nothing treats it as ended.
func TestUnknownRolloutState(t *testing.T) {
	s := outpostv1.RolloutState(99)
	if Active(s) || Terminal(s) || Finished(s) || Deployed(s) {
		t.Errorf("state 99: active %v terminal %v finished %v deployed %v, want all false", Active(s), Terminal(s), Finished(s), Deployed(s))
	}
	if got := Name(s); got != "99" {
		t.Errorf("Name(99) = %q, want \"99\"", got)
	}
}

func TestParseName(t *testing.T) {
	tests := []struct {
		in   string
		want outpostv1.RolloutState
		ok   bool
	}{
		{"RUNNING", outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, true},
		{"PENDING_VALIDATION", outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION, true},
		{"", 0, false},
		{"running", 0, false},
		{"ROLLOUT_STATE_RUNNING", 0, false},
		{" RUNNING", 0, false},
		{"5", 0, false},
		{"RUNNING\x00", 0, false},
		{strings.Repeat("A", 1<<20), 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseName(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseName(%.20q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// TestNodeStates classifies every node state of the API.
func TestNodeStates(t *testing.T) {
	type class struct{ final, failed bool }
	tests := map[outpostv1.NodeState]class{
		outpostv1.NodeState_NODE_STATE_UNSPECIFIED:     {},
		outpostv1.NodeState_NODE_STATE_PENDING:         {},
		outpostv1.NodeState_NODE_STATE_RUNNING:         {},
		outpostv1.NodeState_NODE_STATE_SUCCEEDED:       {final: true},
		outpostv1.NodeState_NODE_STATE_FAILED:          {final: true, failed: true},
		outpostv1.NodeState_NODE_STATE_ROLLED_BACK:     {final: true, failed: true},
		outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED: {final: true, failed: true},
		outpostv1.NodeState_NODE_STATE_SKIPPED:         {final: true},
	}
	for v, name := range outpostv1.NodeState_name {
		s := outpostv1.NodeState(v)
		want, ok := tests[s]
		if !ok {
			t.Errorf("%s is not classified: add it to this table, to NodeFinal, NodeFailed, Add and CountsText", name)
			continue
		}
		if got := (class{final: NodeFinal(s), failed: NodeFailed(s)}); got != want {
			t.Errorf("%s: got %+v, want %+v", name, got, want)
		}
		if got := NodeName(s); got != strings.TrimPrefix(name, "NODE_STATE_") {
			t.Errorf("NodeName(%s) = %q", name, got)
		}
		// Add counts each state in exactly one field (besides the
		// total); only UNSPECIFIED has none.
		c := &outpostv1.NodeCounts{}
		Add(c, s)
		fields := count(c.GetPending() == 1, c.GetRunning() == 1, c.GetSucceeded() == 1, c.GetFailed() == 1,
			c.GetRolledBack() == 1, c.GetRollbackFailed() == 1, c.GetSkipped() == 1)
		wantFields := 1
		if s == outpostv1.NodeState_NODE_STATE_UNSPECIFIED {
			wantFields = 0
		}
		if c.GetTotal() != 1 || fields != wantFields {
			t.Errorf("Add(%s) = %v: total %d, %d fields; want total 1, %d field(s)", name, c, c.GetTotal(), fields, wantFields)
		}
		if got := Failed(c); NodeFailed(s) != (got == 1) {
			t.Errorf("Failed after Add(%s) = %d, yet NodeFailed = %v", name, got, NodeFailed(s))
		}
		if text := CountsText(c); wantFields == 1 && !strings.HasPrefix(text, "1 node: 1 ") {
			t.Errorf("CountsText after Add(%s) = %q, want it to name the state", name, text)
		}
	}
	if len(tests) != len(outpostv1.NodeState_name) {
		t.Errorf("the table has %d states, the API %d", len(tests), len(outpostv1.NodeState_name))
	}
}

func TestStageName(t *testing.T) {
	for v, name := range outpostv1.StageState_name {
		if got := StageName(outpostv1.StageState(v)); got != strings.TrimPrefix(name, "STAGE_STATE_") || got == "" {
			t.Errorf("StageName(%s) = %q", name, got)
		}
	}
}

func TestCounts(t *testing.T) {
	var nodes []*outpostv1.RolloutNode
	for _, s := range []outpostv1.NodeState{
		outpostv1.NodeState_NODE_STATE_SUCCEEDED, outpostv1.NodeState_NODE_STATE_SUCCEEDED,
		outpostv1.NodeState_NODE_STATE_FAILED, outpostv1.NodeState_NODE_STATE_ROLLED_BACK,
		outpostv1.NodeState_NODE_STATE_ROLLBACK_FAILED, outpostv1.NodeState_NODE_STATE_SKIPPED,
		outpostv1.NodeState_NODE_STATE_PENDING, outpostv1.NodeState_NODE_STATE_RUNNING,
		outpostv1.NodeState_NODE_STATE_UNSPECIFIED, outpostv1.NodeState(99),
	} {
		nodes = append(nodes, &outpostv1.RolloutNode{State: s})
	}
	c := Counts(append(nodes, nil)) // a nil node counts as UNSPECIFIED
	want := "11 nodes: 2 succeeded, 1 running, 1 pending, 1 failed, 1 rolled back, 1 rollback failed, 1 skipped"
	if got := CountsText(c); got != want {
		t.Errorf("CountsText(Counts(...)) = %q, want %q", got, want)
	}
	if got := Failed(c); got != 3 {
		t.Errorf("Failed = %d, want 3", got)
	}
}

func TestCountsText(t *testing.T) {
	tests := []struct {
		in   *outpostv1.NodeCounts
		want string
	}{
		{nil, "0 nodes"},
		{&outpostv1.NodeCounts{}, "0 nodes"},
		{&outpostv1.NodeCounts{Total: 1, Succeeded: 1}, "1 node: 1 succeeded"},
		{&outpostv1.NodeCounts{Total: 1}, "1 node"},
		{&outpostv1.NodeCounts{Total: 20, Succeeded: 15, Pending: 5}, "20 nodes: 15 succeeded, 5 pending"},
		{&outpostv1.NodeCounts{Total: 3, Failed: -1}, "3 nodes"}, // nonsense counts are left out, not shown negative
	}
	for _, tt := range tests {
		if got := CountsText(tt.in); got != tt.want {
			t.Errorf("CountsText(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func count(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}
