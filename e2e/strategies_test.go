package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/rolloutstate"
	"github.com/outposthq/outpost/internal/simfleet"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Issue 4 end to end: strategies and rollout control against the SSH
// fleet, asserting on what each host holds.

const dc1 = "dc-1"

func oneDC(int) string { return dc1 }

// relabel applies the fleet's nodes again with extra labels from add.
func (s *system) relabel(add func(i int) map[string]string) {
	s.t.Helper()
	for i, n := range s.nodes {
		n.Labels = map[string]string{"app": e2etest.App}
		for k, v := range add(i) {
			n.Labels[k] = v
		}
		if n.Labels["app"] == "" {
			delete(n.Labels, "app")
		}
		s.nodes[i] = n
	}
	if err := s.client.Apply(ctxT(s.t), s.nodes); err != nil {
		s.t.Fatal(err)
	}
}

// plan is the e2e rolling plan of version with strategy.
func plan(version string, healthy bool, strategy *outpostv1.PlanStrategy) *outpostv1.PlanSpec {
	name := "release-" + version + ".tar.gz"
	if !healthy {
		name = "release-" + version + "-broken.tar.gz"
	}
	spec := e2etest.RollingPlan(name, "1", 10)
	spec.Strategy = strategy
	return spec
}

// stats snapshots every host's SSH counters.
func (s *system) stats() []simfleet.Stats {
	var out []simfleet.Stats
	for _, h := range s.fleet.Hosts() {
		out = append(out, h.Stats())
	}
	return out
}

// TestTieredAbortAtExactThreshold runs the tiered preset over 2 tier-1
// and 10 tier-2 hosts with max_fail_percent 10 ("more than"): one host of
// tier 2 that cannot be reached (10%) lets the rollout succeed; two (20%)
// abort it, with the other tier-2 hosts deployed, as the tier runs at once.
func TestTieredAbortAtExactThreshold(t *testing.T) {
	s := newSystem(t, 12, oneDC)
	s.relabel(func(i int) map[string]string {
		if i < 2 {
			return map[string]string{"tier": "1"}
		}
		return map[string]string{"tier": "2"}
	})
	s.startGateway("gw", dc1)
	refuse := func(hosts ...int) {
		for i, h := range s.fleet.Hosts() {
			h.SetFaults(simfleet.Faults{RefuseConnections: slices.Contains(hosts, i)})
		}
	}
	tiered := &outpostv1.PlanStrategy{Type: "tiered", MaxFailPercent: proto.Int32(10)}

	refuse(5)
	_, d1 := s.release("1.0.0", true)
	r1 := s.create(plan("1.0.0", true, tiered), d1)
	done := s.waitDone(r1.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Fatalf("one failure of ten (10%%): rollout ended %v %q, want SUCCEEDED", done.GetState(), done.GetMessage())
	}
	if diff := cmp.Diff(&outpostv1.NodeCounts{Total: 12, Succeeded: 11, Failed: 1}, done.GetNodeCounts(), protocmp.Transform()); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}

	refuse(5, 8)
	_, d2 := s.release("2.0.0", true)
	r2 := s.create(plan("2.0.0", true, tiered), d2)
	done = s.waitDone(r2.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_ABORTED ||
		done.GetMessage() != "stage tier2: 2 of 10 nodes failed (20% > 10%)" {
		t.Fatalf("two failures of ten (20%%): rollout ended %v %q, want ABORTED over the budget", done.GetState(), done.GetMessage())
	}
	if diff := cmp.Diff(&outpostv1.NodeCounts{Total: 12, Succeeded: 10, Failed: 2}, done.GetNodeCounts(), protocmp.Transform()); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	recs := s.rolloutNodes(r2.GetId())
	for i := range s.nodes {
		want := outpostv1.NodeState_NODE_STATE_SUCCEEDED
		if i == 5 || i == 8 {
			want = outpostv1.NodeState_NODE_STATE_FAILED
		}
		if got := recs[s.nodes[i].GetId()].GetState(); got != want {
			t.Errorf("%s: %v, want %v", s.nodes[i].GetId(), got, want)
		}
		if want == outpostv1.NodeState_NODE_STATE_SUCCEEDED {
			s.checkOn(i, r2.GetReleaseId(), 1)
		}
	}
	// Tier 1 ran one host at a time, before tier 2.
	if st := done.GetStages(); len(st) != 2 || len(st[0].GetBatches()) != 2 || len(st[1].GetBatches()) != 1 {
		t.Errorf("stages %v", stageNames(done))
	}
}

func stageNames(r *outpostv1.Rollout) []string {
	var out []string
	for _, st := range r.GetStages() {
		out = append(out, st.GetName()+"="+rolloutstate.StageName(st.GetState()))
	}
	return out
}

// TestCanaryBakeFailureRollsBackCanaries deploys v1 to six hosts, then v2
// with a canary of two baking for a minute; one canary turns unhealthy
// during the bake: both canaries go back to v1, healthy, and the other
// four hosts never see v2.
func TestCanaryBakeFailureRollsBackCanaries(t *testing.T) {
	s := newSystem(t, 6, oneDC)
	s.startGateway("gw", dc1)
	v1 := s.deploy("1.0.0", "100%")
	_, d2 := s.release("2.0.0", true)
	spec := plan("2.0.0", true, &outpostv1.PlanStrategy{Type: "canary", Count: 2, Bake: "1m", Batch: "100%"})
	spec.Health.Interval = "100ms"
	r := s.create(spec, d2)
	v2 := r.GetReleaseId()
	s.wait(r.GetId(), "the canaries to bake", func(r *outpostv1.Rollout) bool {
		return r.GetStages()[0].GetState() == outpostv1.StageState_STAGE_STATE_BAKING
	})
	for i := range 2 {
		s.checkOn(i, v2, 1)
	}
	// srv-00002 stops being healthy, as a leaking release would.
	if err := os.Remove(filepath.Join(s.fleet.Hosts()[1].ServiceDir(), "releases", v2, "HEALTHY")); err != nil {
		t.Fatal(err)
	}
	done := s.waitDone(r.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK {
		t.Fatalf("rollout ended %v %q, want FAILED_ROLLED_BACK", done.GetState(), done.GetMessage())
	}
	if diff := cmp.Diff(countsOf(6, 0, 2, 4), done.GetNodeCounts(), protocmp.Transform()); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	if !strings.Contains(done.GetMessage(), e2etest.NodeID(1)+": health") {
		t.Errorf("message %q does not name the unhealthy canary", done.GetMessage())
	}
	for i := range s.nodes {
		h := s.checkOn(i, v1, 1)
		name := s.fleet.Hosts()[i].Name
		if i >= 2 {
			if len(h.history) != 1 {
				t.Errorf("%s is no canary but has %d history lines:\n%s", name, len(h.history), historyText(h.history))
			}
			if _, err := os.Stat(filepath.Join(s.fleet.Hosts()[i].ServiceDir(), "releases", v2)); err == nil {
				t.Errorf("%s is no canary but holds %s", name, v2)
			}
			continue
		}
		var actions []string
		for _, e := range h.history {
			actions = append(actions, e.Action+" "+e.Release+" "+resultWord(e.Result))
		}
		want := []string{"activate " + v1 + " succeeded", "activate " + v2 + " succeeded", "rollback " + v1 + " succeeded"}
		if diff := cmp.Diff(want, actions); diff != "" {
			t.Errorf("%s: history (-want +got):\n%s", name, diff)
		}
	}
}

// TestManualPromotion stops after a canary of one until promoted.
func TestManualPromotion(t *testing.T) {
	s := newSystem(t, 4, oneDC)
	s.startGateway("gw", dc1)
	_, d1 := s.release("1.0.0", true)
	r := s.create(plan("1.0.0", true, &outpostv1.PlanStrategy{Type: "canary", Pause: "manual", Batch: "100%"}), d1)
	s.wait(r.GetId(), "the promotion wait", func(r *outpostv1.Rollout) bool {
		return r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_PAUSED &&
			r.GetStages()[0].GetState() == outpostv1.StageState_STAGE_STATE_WAITING_PROMOTION
	})
	time.Sleep(300 * time.Millisecond)
	for i := range s.nodes {
		cur := s.host(i).current
		if (i == 0) != (cur == r.GetReleaseId()) {
			t.Errorf("%s holds %q while the canary waits for promotion", s.nodes[i].GetId(), cur)
		}
	}
	if _, err := s.client.PromoteRollout(ctxT(t), &outpostv1.PromoteRolloutRequest{Id: r.GetId(), Stage: "canary"}); err != nil {
		t.Fatal(err)
	}
	done := s.waitDone(r.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Fatalf("after promotion: %v %q", done.GetState(), done.GetMessage())
	}
	for i := range s.nodes {
		s.checkOn(i, r.GetReleaseId(), 1)
	}
}

// Blue/green's switch node is a load balancer host; its hooks write the
// color that serves to lb/active in its home, where the test reads it.
const (
	switchHook     = `test ! -e lb/down && mkdir -p lb && printf '%s\n' "$OUTPOST_COLOR" >lb/active`
	switchBackHook = `mkdir -p lb && printf '%s\n' "$OUTPOST_COLOR" >lb/active`
)

// TestBlueGreenSwitchAndSwitchBack deploys to the idle color, switches
// traffic on the load balancer host, keeps the old color running for an
// undo that only switches back, and switches back by itself when the
// switch hook fails.
func TestBlueGreenSwitchAndSwitchBack(t *testing.T) {
	s := newSystem(t, 5, oneDC)
	lb := s.fleet.Hosts()[4]
	s.relabel(func(i int) map[string]string {
		if i == 4 {
			return map[string]string{"app": "", "role": "lb"}
		}
		return map[string]string{"color": []string{"blue", "green"}[i%2]}
	})
	s.startGateway("gw", dc1)
	serving := func() string {
		b, err := os.ReadFile(filepath.Join(lb.Root, "lb", "active"))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	strat := func() *outpostv1.PlanStrategy {
		return &outpostv1.PlanStrategy{Type: "blue_green", SwitchNode: e2etest.NodeID(4), SwitchHook: switchHook, SwitchBackHook: switchBackHook}
	}
	blue, green := []int{0, 2}, []int{1, 3}

	_, d1 := s.release("1.0.0", true)
	r1 := s.create(plan("1.0.0", true, strat()), d1)
	if done := s.waitDone(r1.GetId()); done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED || serving() != "blue" {
		t.Fatalf("first blue/green: %v %q, serving %q; want SUCCEEDED on blue", done.GetState(), done.GetMessage(), serving())
	}
	for _, i := range blue {
		s.checkOn(i, r1.GetReleaseId(), 1)
	}
	for _, i := range green {
		if cur := s.host(i).current; cur != "" {
			t.Errorf("green host %d holds %q after a rollout to blue", i, cur)
		}
	}

	_, d2 := s.release("2.0.0", true)
	r2 := s.create(plan("2.0.0", true, strat()), d2)
	if done := s.waitDone(r2.GetId()); done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED || serving() != "green" {
		t.Fatalf("second blue/green: %v %q, serving %q; want SUCCEEDED on green", done.GetState(), done.GetMessage(), serving())
	}
	for _, i := range green {
		s.checkOn(i, r2.GetReleaseId(), 1)
	}
	for _, i := range blue { // the old color is kept running for the switch back
		s.checkOn(i, r1.GetReleaseId(), 1)
	}

	before := s.stats()
	undo, err := s.client.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Undo: &outpostv1.RolloutUndo{App: e2etest.App}})
	if err != nil {
		t.Fatal(err)
	}
	if done := s.waitDone(undo.GetRollout().GetId()); done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED || serving() != "blue" {
		t.Fatalf("undo: %v %q, serving %q; want SUCCEEDED back on blue", done.GetState(), done.GetMessage(), serving())
	}
	after := s.stats()
	for i := range 4 {
		if after[i].Connections != before[i].Connections {
			t.Errorf("the switch-back undo connected to app host %d", i)
		}
	}

	// The switch fails (the balancer refuses): traffic goes back to blue.
	if err := os.WriteFile(filepath.Join(lb.Root, "lb", "down"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, d3 := s.release("3.0.0", true)
	r3 := s.create(plan("3.0.0", true, strat()), d3)
	if bg := r3.GetBlueGreen(); bg.GetTargetColor() != "green" || bg.GetLiveColor() != "blue" {
		t.Fatalf("third blue/green targets %v", bg)
	}
	done := s.waitDone(r3.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK || serving() != "blue" ||
		!strings.Contains(done.GetMessage(), "switching traffic back to blue") {
		t.Fatalf("failed switch: %v %q, serving %q; want FAILED_ROLLED_BACK, back on blue", done.GetState(), done.GetMessage(), serving())
	}
	for _, i := range blue {
		s.checkOn(i, r1.GetReleaseId(), 1)
	}
}

// TestUndoReusesReleasesWithoutUpload deploys v1 and v2, then undoes to
// v1: every host makes v1 current again from releases/ without a single
// SFTP write, and the undo is revision 3.
func TestUndoReusesReleasesWithoutUpload(t *testing.T) {
	s := newSystem(t, 4, alternateDC)
	s.twoGateways()
	v1 := s.deploy("1.0.0", "100%")
	v2 := s.deploy("2.0.0", "100%")
	before := s.stats()
	resp, err := s.client.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Undo: &outpostv1.RolloutUndo{App: e2etest.App, ToRevision: 1}})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.GetRollout()
	if r.GetReleaseId() != v1 || r.GetRevision() != 3 || r.GetSourceRevision() != 1 {
		t.Fatalf("undo rollout: release %s revision %d source %d; want %s, 3, 1", r.GetReleaseId(), r.GetRevision(), r.GetSourceRevision(), v1)
	}
	done := s.waitDone(r.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Fatalf("undo ended %v %q", done.GetState(), done.GetMessage())
	}
	after := s.stats()
	for i := range s.nodes {
		if w := after[i].SFTPWrites - before[i].SFTPWrites; w != 0 {
			t.Errorf("%s: %d SFTP writes during the undo, want none", s.fleet.Hosts()[i].Name, w)
		}
		h := s.checkOn(i, v1, 2)
		if last := h.history[len(h.history)-1]; last.Previous != v2 || last.Rollout != r.GetId() {
			t.Errorf("%s: last history line %+v, want the re-activation of %s from %s", s.fleet.Hosts()[i].Name, last, v1, v2)
		}
	}
	revs, err := s.client.ListRevisions(ctxT(t), &outpostv1.ListRevisionsRequest{App: e2etest.App})
	if err != nil || len(revs.GetRevisions()) != 3 || revs.GetRevisions()[0].GetSourceRevision() != 1 {
		t.Errorf("revisions = %v, %v", revs.GetRevisions(), err)
	}
}

// TestRetryRunsOnlyFailedNodes deploys to six hosts, two of which cannot
// be reached; retry deploys those two, and connects to no other host.
func TestRetryRunsOnlyFailedNodes(t *testing.T) {
	s := newSystem(t, 6, oneDC)
	s.startGateway("gw", dc1)
	for _, i := range []int{2, 4} {
		s.fleet.Hosts()[i].SetFaults(simfleet.Faults{RefuseConnections: true})
	}
	_, d1 := s.release("1.0.0", true)
	r := s.create(e2etest.RollingPlan("release-1.0.0.tar.gz", "100%", 50), d1)
	done := s.waitDone(r.GetId())
	if done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED || done.GetNodeCounts().GetFailed() != 2 {
		t.Fatalf("first run: %v %q %v", done.GetState(), done.GetMessage(), done.GetNodeCounts())
	}
	for _, h := range s.fleet.Hosts() {
		h.SetFaults(simfleet.Faults{})
	}
	before := s.stats()
	if _, err := s.client.RetryRollout(ctxT(t), &outpostv1.RetryRolloutRequest{Id: r.GetId()}); err != nil {
		t.Fatal(err)
	}
	done = s.wait(r.GetId(), "the retry", func(r *outpostv1.Rollout) bool {
		return r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED && r.GetNodeCounts().GetSucceeded() == 6
	})
	after := s.stats()
	for i := range s.nodes {
		s.checkOn(i, r.GetReleaseId(), 1)
		touched := after[i].Connections != before[i].Connections
		if touched != (i == 2 || i == 4) {
			t.Errorf("%s: connected during the retry = %v", s.fleet.Hosts()[i].Name, touched)
		}
	}
	if done.GetMessage() != "" {
		t.Errorf("message %q", done.GetMessage())
	}
}

// TestPauseResumeAcrossControlPlaneRestart pauses a rollout after its
// first batch, restarts the control plane, sees it stay paused with no
// host started, and resumes it to the end.
func TestPauseResumeAcrossControlPlaneRestart(t *testing.T) {
	s := newSystem(t, 6, oneDC)
	s.startGateway("gw", dc1)
	s.setExecDelay(100 * time.Millisecond)
	_, d1 := s.release("1.0.0", true)
	r := s.create(e2etest.RollingPlan("release-1.0.0.tar.gz", "2", 0), d1)
	s.wait(r.GetId(), "the first batch", func(r *outpostv1.Rollout) bool { return r.GetNodeCounts().GetRunning() > 0 })
	if _, err := s.client.PauseRollout(ctxT(t), &outpostv1.PauseRolloutRequest{Id: r.GetId(), Reason: "change freeze"}); err != nil {
		t.Fatal(err)
	}
	paused := s.wait(r.GetId(), "the running nodes to finish", func(r *outpostv1.Rollout) bool {
		return r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_PAUSED && r.GetNodeCounts().GetRunning() == 0
	})
	deployed := paused.GetNodeCounts().GetSucceeded()
	s.stopCP()
	s.startCP()
	time.Sleep(time.Second)
	again := s.wait(r.GetId(), "PAUSED after the restart", func(r *outpostv1.Rollout) bool {
		return r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_PAUSED
	})
	if again.GetNodeCounts().GetSucceeded() != deployed || again.GetNodeCounts().GetRunning() != 0 || again.GetMessage() != "paused: change freeze" {
		t.Fatalf("after the restart: counts %v message %q; want %d succeeded and nothing running", again.GetNodeCounts(), again.GetMessage(), deployed)
	}
	untouched := 0
	for i := range s.nodes {
		if s.host(i).current == "" {
			untouched++
		}
	}
	if untouched != 6-int(deployed) {
		t.Errorf("%d hosts without a release while paused, want %d", untouched, 6-deployed)
	}
	if _, err := s.client.ResumeRollout(ctxT(t), &outpostv1.ResumeRolloutRequest{Id: r.GetId()}); err != nil {
		t.Fatal(err)
	}
	s.setExecDelay(0)
	s.checkRolledOutOnce(r)
}

// TestDryRunTouchesNothing expands a plan without creating a rollout or
// connecting to any host.
func TestDryRunTouchesNothing(t *testing.T) {
	s := newSystem(t, 5, oneDC)
	s.startGateway("gw", dc1)
	_, d1 := s.release("1.0.0", true)
	resp, err := s.client.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{
		Plan: e2etest.RollingPlan("release-1.0.0.tar.gz", "2", 10), ArtifactSha256: d1, DryRun: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.GetRollout()
	var batches [][]string
	for _, b := range r.GetStages()[0].GetBatches() {
		batches = append(batches, b.GetNodeIds())
	}
	want := [][]string{{e2etest.NodeID(0), e2etest.NodeID(1)}, {e2etest.NodeID(2), e2etest.NodeID(3)}, {e2etest.NodeID(4)}}
	if diff := cmp.Diff(want, batches); diff != "" || r.GetId() != "" {
		t.Errorf("dry run %q batches (-want +got):\n%s", r.GetId(), diff)
	}
	time.Sleep(500 * time.Millisecond)
	list, err := s.client.ListRollouts(ctxT(t), &outpostv1.ListRolloutsRequest{})
	if err != nil || len(list.GetRollouts()) != 0 {
		t.Errorf("rollouts after a dry run: %v, %v", list.GetRollouts(), err)
	}
	for i, st := range s.stats() {
		if st.Connections != 0 {
			t.Errorf("host %d: %d SSH connections after a dry run", i, st.Connections)
		}
		if _, err := os.Stat(filepath.Join(s.fleet.Hosts()[i].ServiceDir(), ".outpost")); err == nil {
			t.Errorf("host %d has a .outpost directory after a dry run", i)
		}
	}
}
