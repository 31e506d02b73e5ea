package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// watchScript is a small rollout's watch: three nodes in two batches;
// node-02 fails its health check and is rolled back, which is over the
// stage's 10% budget, so node-03 is skipped and the rollout aborts.
func watchScript() []*outpostv1.WatchRolloutResponse {
	rollout := func(state outpostv1.RolloutState, stage outpostv1.StageState, batch int32, msg string, updated time.Duration) *outpostv1.Rollout {
		return &outpostv1.Rollout{
			Id: "r-000003", App: "demo", Revision: 3, ReleaseId: "r3-0badc0de", State: state, Message: msg,
			CurrentStage: 0, CreateTime: ts(0), UpdateTime: ts(updated),
			Stages: []*outpostv1.Stage{{
				Name: "rolling", State: stage, CurrentBatch: batch, MaxFailPercent: 10,
				Batches: []*outpostv1.Batch{{Index: 0, NodeIds: []string{"node-01", "node-02"}}, {Index: 1, NodeIds: []string{"node-03"}}},
			}},
		}
	}
	node := func(id string, batch int32, state outpostv1.NodeState, errMsg string) *outpostv1.RolloutNode {
		return &outpostv1.RolloutNode{RolloutId: "r-000003", NodeId: id, Stage: "rolling", Batch: batch, State: state, Error: errMsg}
	}
	step := func(id string, s outpostv1.Step, ph outpostv1.StepPhase, d time.Duration, detail, errMsg string) *outpostv1.NodeStepEvent {
		ev := &outpostv1.NodeStepEvent{NodeId: id, RolloutId: "r-000003", Step: s, Phase: ph, Time: ts(d), Detail: detail, Error: errMsg}
		if ph != outpostv1.StepPhase_STEP_PHASE_STARTED {
			ev.Duration = durationpb.New(d)
		}
		return ev
	}
	const (
		running   = outpostv1.NodeState_NODE_STATE_RUNNING
		started   = outpostv1.StepPhase_STEP_PHASE_STARTED
		succeeded = outpostv1.StepPhase_STEP_PHASE_SUCCEEDED
		failed    = outpostv1.StepPhase_STEP_PHASE_FAILED
	)
	r := func(rev int64, m *outpostv1.Rollout) *outpostv1.WatchRolloutResponse {
		return &outpostv1.WatchRolloutResponse{Revision: rev, Event: &outpostv1.WatchRolloutResponse_Rollout{Rollout: m}}
	}
	n := func(rev int64, m *outpostv1.RolloutNode) *outpostv1.WatchRolloutResponse {
		return &outpostv1.WatchRolloutResponse{Revision: rev, Event: &outpostv1.WatchRolloutResponse_Node{Node: m}}
	}
	s := func(rev int64, m *outpostv1.NodeStepEvent) *outpostv1.WatchRolloutResponse {
		return &outpostv1.WatchRolloutResponse{Revision: rev, Event: &outpostv1.WatchRolloutResponse_StepEvent{StepEvent: m}}
	}
	return []*outpostv1.WatchRolloutResponse{
		r(10, rollout(outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, outpostv1.StageState_STAGE_STATE_RUNNING, 0, "", time.Second)),
		n(10, node("node-01", 0, running, "")),
		n(10, node("node-02", 0, running, "")),
		n(10, node("node-03", 1, outpostv1.NodeState_NODE_STATE_PENDING, "")),
		{Revision: 10, Event: &outpostv1.WatchRolloutResponse_SnapshotEnd{SnapshotEnd: &outpostv1.WatchSnapshotEnd{}}},
		s(11, step("node-01", outpostv1.Step_STEP_CONNECT, started, 0, "", "")),
		s(11, step("node-01", outpostv1.Step_STEP_CONNECT, succeeded, 12*time.Millisecond, "", "")),
		s(12, step("node-01", outpostv1.Step_STEP_UPLOAD, succeeded, 1234*time.Millisecond, "uploaded 5.0 MiB", "")),
		n(13, node("node-01", 0, outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")),
		s(14, step("node-02", outpostv1.Step_STEP_HEALTH, failed, 5*time.Second, "", "GET http://127.0.0.2:18080/health: 503 Service Unavailable")),
		s(15, step("node-02", outpostv1.Step_STEP_ROLLBACK, succeeded, 800*time.Millisecond, "release r3-0badc0de -> r2-600dc0de", "")),
		n(16, node("node-02", 0, outpostv1.NodeState_NODE_STATE_ROLLED_BACK, "health: 503 Service Unavailable")),
		n(17, node("node-03", 1, outpostv1.NodeState_NODE_STATE_SKIPPED, "")),
		r(18, rollout(outpostv1.RolloutState_ROLLOUT_STATE_ABORTED, outpostv1.StageState_STAGE_STATE_FAILED, 0,
			"stage rolling: 1 of 3 nodes failed (33% > 10%)", 42*time.Second)),
	}
}

// serve returns a watch that sends items from from_revision on (all for 0),
// or up to cut items and then ends with err (nil: a clean early end, as
// when the server restarts).
//
// After the last item it keeps the real server's contract: the stream
// ends only when the rollout's last state is terminal
// (rolloutstate.Terminal); otherwise, PENDING_VALIDATION included, it
// stays open until the client cancels it.
func serve(items []*outpostv1.WatchRolloutResponse, cut int, err error) func(int, *outpostv1.WatchRolloutRequest, grpc.ServerStreamingServer[outpostv1.WatchRolloutResponse]) error {
	return func(_ int, req *outpostv1.WatchRolloutRequest, stream grpc.ServerStreamingServer[outpostv1.WatchRolloutResponse]) error {
		sent := 0
		var last *outpostv1.Rollout
		for _, it := range items {
			if r := it.GetRollout(); r != nil {
				last = r
			}
			if it.GetRevision() <= req.GetFromRevision() {
				continue
			}
			if cut >= 0 && sent == cut {
				return err
			}
			if err := stream.Send(it); err != nil {
				return err
			}
			sent++
		}
		if last != nil && rolloutstate.Terminal(last.GetState()) {
			return nil
		}
		<-stream.Context().Done()
		return status.FromContextError(stream.Context().Err()).Err()
	}
}

func TestWatchPlainGolden(t *testing.T) {
	f := startFake(t)
	f.watch = serve(watchScript(), -1, nil)
	code, out, errOut := f.run(t, "rollout", "watch", "r-000003")
	if code != 1 {
		t.Errorf("watch of an aborted rollout: exit %d, want 1 (stderr %q)", code, errOut)
	}
	golden(t, "watch_plain.golden", out)
}

func TestWatchJSONGolden(t *testing.T) {
	f := startFake(t)
	f.watch = serve(watchScript(), -1, nil)
	code, out, errOut := f.run(t, "rollout", "watch", "r-000003", "-o", "json")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	golden(t, "watch_json.golden", out)
	if want := "rollout r-000003 ABORTED after 42s: 3 nodes: 1 succeeded, 1 rolled back, 1 skipped\n"; errOut != want {
		t.Errorf("json mode summary on stderr = %q, want %q", errOut, want)
	}
}

// paged is items with each run of node responses at one revision turned
// into one node_page response, as a server sends them to a client that
// asks for pages; with brief, rollouts' batches carry their node count
// instead of their node ids, as such a server sends them too.
func paged(items []*outpostv1.WatchRolloutResponse, brief bool) []*outpostv1.WatchRolloutResponse {
	var out []*outpostv1.WatchRolloutResponse
	for _, it := range items {
		n := it.GetNode()
		if r := it.GetRollout(); r != nil && brief {
			r = proto.CloneOf(r)
			for _, st := range r.GetStages() {
				for _, b := range st.GetBatches() {
					b.NodeCount, b.NodeIds = int32(len(b.GetNodeIds())), nil
				}
			}
			it = &outpostv1.WatchRolloutResponse{Revision: it.GetRevision(), Event: &outpostv1.WatchRolloutResponse_Rollout{Rollout: r}}
		}
		if n == nil {
			out = append(out, it)
			continue
		}
		if last := out[len(out)-1]; last.GetNodePage() != nil && last.GetRevision() == it.GetRevision() {
			last.GetNodePage().Nodes = append(last.GetNodePage().Nodes, n)
			continue
		}
		out = append(out, &outpostv1.WatchRolloutResponse{Revision: it.GetRevision(), Event: &outpostv1.WatchRolloutResponse_NodePage{
			NodePage: &outpostv1.WatchNodePage{Nodes: []*outpostv1.RolloutNode{n}},
		}})
	}
	return out
}

// The watch asks for node pages, and shows them (and rollouts with batch
// node counts) as it shows nodes one by one and whole rollouts: the same
// lines, and -o json still one node per line.
func TestWatchNodePages(t *testing.T) {
	if items := paged(watchScript(), true); len(items) != len(watchScript())-2 || items[1].GetNodePage() == nil {
		t.Fatalf("paged script: %v", items)
	}
	for _, tc := range []struct {
		args   []string
		items  []*outpostv1.WatchRolloutResponse
		golden string
	}{
		{args: []string{"rollout", "watch", "r-000003"}, items: paged(watchScript(), true), golden: "watch_plain.golden"},
		{args: []string{"rollout", "watch", "r-000003", "-o", "json"}, items: paged(watchScript(), false), golden: "watch_json.golden"},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			f := startFake(t)
			f.watch = serve(tc.items, -1, nil)
			if code, out, errOut := f.run(t, tc.args...); code != 1 {
				t.Errorf("exit %d, want 1 (stderr %q)", code, errOut)
			} else {
				golden(t, tc.golden, out)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if got := f.watches[0].GetNodePageSize(); got != watchNodePage {
				t.Errorf("node_page_size = %d, want %d", got, watchNodePage)
			}
		})
	}
}

// A stream that breaks inside the snapshot resumes with a new snapshot:
// its revision says nothing until snapshot_end.
func TestWatchBrokenSnapshotStartsOver(t *testing.T) {
	shortRetry(t, 3)
	f := startFake(t)
	items := watchScript()
	f.watch = func(n int, req *outpostv1.WatchRolloutRequest, stream grpc.ServerStreamingServer[outpostv1.WatchRolloutResponse]) error {
		if n == 0 {
			// The rollout and one node of the snapshot, then a break.
			return serve(items, 2, status.Error(codes.Unavailable, "leader changed"))(n, req, stream)
		}
		return serve(items, -1, nil)(n, req, stream)
	}
	code, out, _ := f.run(t, "rollout", "watch", "r-000003")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(out, "3 nodes: 1 succeeded, 1 rolled back, 1 skipped") {
		t.Errorf("stdout %q: want every node counted", out)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var revs []int64
	for _, w := range f.watches {
		revs = append(revs, w.GetFromRevision())
	}
	if len(revs) != 2 || revs[1] != 0 {
		t.Errorf("watch calls with from_revision %v, want [0 0]", revs)
	}
}

func TestWatchSucceededExitsZero(t *testing.T) {
	for _, state := range []outpostv1.RolloutState{
		outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED,
		outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION,
		outpostv1.RolloutState_ROLLOUT_STATE_VALIDATED,
		outpostv1.RolloutState_ROLLOUT_STATE_FAILED_ROLLED_BACK,
		outpostv1.RolloutState_ROLLOUT_STATE_REJECTED,
	} {
		f := startFake(t)
		r := sampleRollout()
		r.State = state
		f.watch = serve(snapshotOf(5, r), -1, nil)
		code, out, errOut := f.run(t, "rollout", "watch", r.GetId())
		want := 1
		if rolloutstate.Deployed(state) {
			want = 0
		}
		if code != want {
			t.Errorf("watch ending in %v: exit %d, want %d (stdout %q, stderr %q)", state, code, want, out, errOut)
		}
		if !strings.Contains(out, "rollout r-000042 "+rolloutstate.Name(state)+" after 1m35s: 15 nodes") {
			t.Errorf("watch ending in %v: no summary line in %q", state, out)
		}
	}
}

// snapshotOf is the snapshot WatchRollout starts with: the rollout, its
// nodes, and snapshot_end, all at revision rev.
func snapshotOf(rev int64, r *outpostv1.Rollout, nodes ...*outpostv1.RolloutNode) []*outpostv1.WatchRolloutResponse {
	items := []*outpostv1.WatchRolloutResponse{{Revision: rev, Event: &outpostv1.WatchRolloutResponse_Rollout{Rollout: r}}}
	for _, n := range nodes {
		items = append(items, &outpostv1.WatchRolloutResponse{Revision: rev, Event: &outpostv1.WatchRolloutResponse_Node{Node: n}})
	}
	return append(items, &outpostv1.WatchRolloutResponse{Revision: rev, Event: &outpostv1.WatchRolloutResponse_SnapshotEnd{SnapshotEnd: &outpostv1.WatchSnapshotEnd{}}})
}

// validationRollout is a rollout of two nodes in one batch, in state.
func validationRollout(state outpostv1.RolloutState, updated time.Duration) *outpostv1.Rollout {
	r := &outpostv1.Rollout{
		Id: "r-000004", App: "demo", Revision: 4, ReleaseId: "r4-0badc0de", State: state,
		CurrentStage: 0, CreateTime: ts(0), UpdateTime: ts(updated),
		Stages: []*outpostv1.Stage{{
			Name: "rolling", State: outpostv1.StageState_STAGE_STATE_RUNNING, CurrentBatch: 0, MaxFailPercent: 10,
			Batches: []*outpostv1.Batch{{Index: 0, NodeIds: []string{"node-01", "node-02"}}},
		}},
	}
	if state == outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION {
		r.Stages[0].State = outpostv1.StageState_STAGE_STATE_SUCCEEDED
		r.Message = "waiting for validation (outpost rollout validate r-000004 --accept or --reject)"
	}
	return r
}

func validationNode(id string, state outpostv1.NodeState) *outpostv1.RolloutNode {
	return &outpostv1.RolloutNode{RolloutId: "r-000004", NodeId: id, Stage: "rolling", Batch: 0, State: state}
}

// TestWatchReturnsAtPendingValidation: the server keeps the stream open at
// PENDING_VALIDATION (only terminal states end it), so the watch must
// stop by itself there, exit 0 and cancel the stream, whether the state
// comes as a change or in the first snapshot.
func TestWatchReturnsAtPendingValidation(t *testing.T) {
	const (
		running   = outpostv1.NodeState_NODE_STATE_RUNNING
		succeeded = outpostv1.NodeState_NODE_STATE_SUCCEEDED
		pv        = outpostv1.RolloutState_ROLLOUT_STATE_PENDING_VALIDATION
	)
	change := func(rev int64, m proto.Message) *outpostv1.WatchRolloutResponse {
		switch m := m.(type) {
		case *outpostv1.Rollout:
			return &outpostv1.WatchRolloutResponse{Revision: rev, Event: &outpostv1.WatchRolloutResponse_Rollout{Rollout: m}}
		case *outpostv1.RolloutNode:
			return &outpostv1.WatchRolloutResponse{Revision: rev, Event: &outpostv1.WatchRolloutResponse_Node{Node: m}}
		}
		panic("not a watch item")
	}
	tests := []struct {
		name  string
		items []*outpostv1.WatchRolloutResponse
	}{
		{"as a change", append(snapshotOf(10,
			validationRollout(outpostv1.RolloutState_ROLLOUT_STATE_RUNNING, time.Second),
			validationNode("node-01", running), validationNode("node-02", running)),
			change(11, validationNode("node-01", succeeded)),
			change(12, validationNode("node-02", succeeded)),
			change(13, validationRollout(pv, 30*time.Second)))},
		// The summary counts the nodes sent after the rollout: the watch
		// ends at snapshot_end, not at the rollout's first message.
		{"in the snapshot", snapshotOf(13, validationRollout(pv, 30*time.Second),
			validationNode("node-01", succeeded), validationNode("node-02", succeeded))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t)
			ended := make(chan error, 1)
			whole := serve(tt.items, -1, nil)
			f.watch = func(n int, req *outpostv1.WatchRolloutRequest, stream grpc.ServerStreamingServer[outpostv1.WatchRolloutResponse]) error {
				err := whole(n, req, stream)
				ended <- err
				return err
			}
			code, out, errOut := f.run(t, "rollout", "watch", "r-000004")
			if code != 0 {
				t.Errorf("exit %d, want 0 (stdout %q, stderr %q)", code, out, errOut)
			}
			if want := "rollout r-000004 PENDING_VALIDATION after 30s: 2 nodes: 2 succeeded\n"; !strings.HasSuffix(out, want) {
				t.Errorf("stdout %q, want it to end with the summary %q", out, want)
			}
			select {
			case err := <-ended:
				if status.Code(err) != codes.Canceled {
					t.Errorf("the server's stream ended with %v, want the client's cancel", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("the server's stream is still open after the watch returned")
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.watches) != 1 {
				t.Errorf("%d watch calls, want 1", len(f.watches))
			}
		})
	}
}

// TestWatchResumesBrokenSnapshotWhole: a stream that breaks in the
// middle of its snapshot resumes with a whole snapshot (from revision 0):
// resuming from the snapshot's revision would miss the nodes not yet
// received, and a finished rollout would then never look finished.
func TestWatchResumesBrokenSnapshotWhole(t *testing.T) {
	shortRetry(t, 3)
	f := startFake(t)
	items := watchScript()
	whole := serve(items, -1, nil)
	broken := serve(items, 2, status.Error(codes.Unavailable, "leader changed")) // the rollout and node-01
	f.watch = func(n int, req *outpostv1.WatchRolloutRequest, stream grpc.ServerStreamingServer[outpostv1.WatchRolloutResponse]) error {
		if n == 0 {
			return broken(n, req, stream)
		}
		return whole(n, req, stream)
	}
	code, out, _ := f.run(t, "rollout", "watch", "r-000003")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	golden(t, "watch_plain.golden", out)
	f.mu.Lock()
	defer f.mu.Unlock()
	var revs []int64
	for _, w := range f.watches {
		revs = append(revs, w.GetFromRevision())
	}
	if len(revs) != 2 || revs[0] != 0 || revs[1] != 0 {
		t.Errorf("watch calls with from_revision %v, want [0 0]", revs)
	}
}

func shortRetry(t *testing.T, attempts int) {
	old := watchRetry
	watchRetry = retryPolicy{attempts: attempts, min: time.Millisecond, max: 4 * time.Millisecond}
	t.Cleanup(func() { watchRetry = old })
}

func TestWatchResumesFromLastRevision(t *testing.T) {
	shortRetry(t, 3)
	f := startFake(t)
	items := watchScript()
	whole := serve(items, -1, nil)
	// The first stream breaks after 9 items (the last has revision 13);
	// the second must resume from there and not repeat anything.
	broken := serve(items, 9, status.Error(codes.Unavailable, "leader changed"))
	f.watch = func(n int, req *outpostv1.WatchRolloutRequest, stream grpc.ServerStreamingServer[outpostv1.WatchRolloutResponse]) error {
		if n == 0 {
			return broken(n, req, stream)
		}
		return whole(n, req, stream)
	}
	code, out, errOut := f.run(t, "rollout", "watch", "r-000003")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	// Same lines as one unbroken stream.
	golden(t, "watch_plain.golden", out)
	if !strings.Contains(errOut, "leader changed; reconnecting in 1ms (attempt 1 of 3)") {
		t.Errorf("stderr %q: want a reconnect notice", errOut)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.watches) != 2 || f.watches[0].GetFromRevision() != 0 || f.watches[1].GetFromRevision() != 13 {
		var revs []int64
		for _, w := range f.watches {
			revs = append(revs, w.GetFromRevision())
		}
		t.Errorf("watch calls with from_revision %v, want [0 13]", revs)
	}
}

func TestWatchGivesUp(t *testing.T) {
	shortRetry(t, 3)
	f := startFake(t)
	f.watch = serve(watchScript(), 0, status.Error(codes.Unavailable, "no leader"))
	code, _, errOut := f.run(t, "rollout", "watch", "r-000003")
	if code != 1 || !strings.Contains(errOut, "gave up after 3 attempts") {
		t.Errorf("exit %d, stderr %q; want exit 1 and giving up", code, errOut)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.watches) != 4 {
		t.Errorf("%d watch calls, want 4 (one and 3 retries)", len(f.watches))
	}
}

func TestWatchEarlyEndResumes(t *testing.T) {
	shortRetry(t, 3)
	f := startFake(t)
	items := watchScript()
	// The stream ends cleanly before the rollout does (a server restart):
	// that is not the end of the rollout.
	f.watch = func(n int, req *outpostv1.WatchRolloutRequest, stream grpc.ServerStreamingServer[outpostv1.WatchRolloutResponse]) error {
		if n == 0 {
			return serve(items, 5, nil)(n, req, stream)
		}
		return serve(items, -1, nil)(n, req, stream)
	}
	code, out, _ := f.run(t, "rollout", "watch", "r-000003")
	if code != 1 || !strings.Contains(out, "ABORTED after 42s") {
		t.Errorf("exit %d, stdout %q; want the watch to resume and end with the abort", code, out)
	}
}

func TestWatchNotFoundDoesNotRetry(t *testing.T) {
	shortRetry(t, 3)
	f := startFake(t)
	f.watch = func(int, *outpostv1.WatchRolloutRequest, grpc.ServerStreamingServer[outpostv1.WatchRolloutResponse]) error {
		return status.Error(codes.NotFound, `rollout "r-9" not found`)
	}
	code, _, errOut := f.run(t, "rollout", "watch", "r-9")
	if code != 1 || !strings.Contains(errOut, "watch rollout r-9: not found") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.watches) != 1 {
		t.Errorf("%d watch calls, want 1: NOT_FOUND is final", len(f.watches))
	}
}

func TestWatchLiveGolden(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress()
	v := &textView{w: &buf, p: p, live: true, color: true, width: 100, now: func() time.Time { return t0.Add(75 * time.Second) }}
	items := watchScript()
	// Two redraws: mid-rollout, then after the end.
	for _, it := range items[:9] {
		p.apply(it, v)
	}
	v.render()
	for _, it := range items[9:] {
		p.apply(it, v)
	}
	v.render()
	golden(t, "watch_live.golden", strings.ReplaceAll(buf.String(), "\x1b", "ESC"))
}

func TestBackoff(t *testing.T) {
	p := retryPolicy{attempts: 10, min: 250 * time.Millisecond, max: 5 * time.Second}
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i, w := range want {
		if got := backoff(p, i+1); got != w {
			t.Errorf("backoff(attempt %d) = %v, want %v", i+1, got, w)
		}
	}
}

// TestWatchRetries: a watch resumes after a passing failure, never after
// the control plane's cap on watches (the user must end one) or a refusal.
func TestWatchRetries(t *testing.T) {
	for code, want := range map[codes.Code]bool{
		codes.Unavailable:       true,
		codes.DeadlineExceeded:  true,
		codes.ResourceExhausted: false,
		codes.PermissionDenied:  false,
		codes.NotFound:          false,
	} {
		if got := retryableWatch(code); got != want {
			t.Errorf("retryableWatch(%v) = %v, want %v", code, got, want)
		}
	}
}
