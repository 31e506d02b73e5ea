package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outposthq/outpost/gateway/deployer"
	"github.com/outposthq/outpost/internal/tarscan"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestHelloAndHeartbeats(t *testing.T) {
	cp := startFakeCP(t)
	cp.with(func(f *fakeCP) { f.heartbeat = 20 * time.Millisecond })
	startGateway(t, cp, newFakeDeployer(), func(c *Config) { c.Concurrency = 7 })
	waitFor(t, "hello", func() bool { return cp.helloCount() == 1 })
	want := &outpostv1.GatewayHello{Name: "gw-1", Datacenter: "dc-1", Capacity: 7, Version: "test"}
	if diff := cmp.Diff(want, cp.hello(0), protocmp.Transform()); diff != "" {
		t.Errorf("hello (-want +got):\n%s", diff)
	}
	waitFor(t, "3 heartbeats", func() bool {
		var n int
		cp.with(func(f *fakeCP) { n = f.heartbeats })
		return n >= 3
	})
}

func TestAssignmentsRunWithBoundedConcurrency(t *testing.T) {
	cp := startFakeCP(t)
	data := []byte("release one")
	digest := cp.addBlob(data)
	dep := newFakeDeployer()
	const nodes, concurrency = 7, 3
	for i := range nodes {
		dep.hold(nodeName(i), outpostv1.Step_STEP_LOCK)
	}
	startGateway(t, cp, dep, func(c *Config) { c.Concurrency = concurrency })
	for i := range nodes {
		cp.assign(t, assignment(fmt.Sprintf("a%d", i), nodeName(i), digest))
	}
	for i := range nodes {
		if ack := cp.waitAck(t, fmt.Sprintf("a%d", i)); !ack.GetAccepted() {
			t.Fatalf("assignment a%d refused: %s", i, ack.GetReason())
		}
	}
	// Exactly `concurrency` nodes are held; the rest wait in the queue.
	waitFor(t, "three nodes held", func() bool {
		n := 0
		for i := range nodes {
			if dep.isHeld(nodeName(i)) {
				n++
			}
		}
		return n == concurrency
	})
	for i := range nodes {
		// Releasing every gate up front is fine: a queued node passes its
		// gate when it starts, still within the bound.
		dep.release(nodeName(i))
	}
	for i := range nodes {
		id := fmt.Sprintf("a%d", i)
		res := cp.waitResult(t, id)
		if res.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED || res.GetNodeId() != nodeName(i) {
			t.Errorf("result of %s = %v", id, res)
		}
		evs := cp.eventsOf(id)
		if err := checkEventOrder(evs); err != nil {
			t.Errorf("events of %s: %v", id, err)
		}
		if len(evs) != 2*len(fakeSteps) {
			t.Errorf("%s: %d events, want %d", id, len(evs), 2*len(fakeSteps))
		}
	}
	dep.mu.Lock()
	most := dep.most
	job := dep.jobs[nodeName(0)]
	content := dep.content[nodeName(0)]
	dep.mu.Unlock()
	if most != concurrency {
		t.Errorf("at most %d deployments ran at once, want %d", most, concurrency)
	}
	if !bytes.Equal(content, data) {
		t.Errorf("deployer read %q from the cached artifact, want %q", content, data)
	}
	if job.Owner != "cp-1/rollout-1" || job.RolloutID != "rollout-1" || job.Epoch != 1 || job.Spec.Path != "app" {
		t.Errorf("job = %+v", job)
	}
	if got := cp.fetchCount(); got != 1 {
		t.Errorf("FetchArtifact calls = %d for %d nodes, want 1", got, nodes)
	}

	// A second rollout of the same artifact fetches nothing.
	for i := range nodes {
		cp.assign(t, assignment(fmt.Sprintf("b%d", i), nodeName(i), digest))
	}
	for i := range nodes {
		cp.waitResult(t, fmt.Sprintf("b%d", i))
	}
	if got := cp.fetchCount(); got != 1 {
		t.Errorf("FetchArtifact calls after a second rollout = %d, want 1", got)
	}
}

func TestRefusals(t *testing.T) {
	cp := startFakeCP(t)
	cp.with(func(f *fakeCP) { f.epoch = 5 })
	digest := cp.addBlob([]byte("x"))
	dep := newFakeDeployer()
	startGateway(t, cp, dep, func(c *Config) { c.Concurrency = 1 })

	otherDC := assignment("wrong-dc", "srv-1", digest)
	otherDC.Epoch = 5
	otherDC.Node.Datacenter = "dc-2"
	stale := assignment("stale", "srv-2", digest)
	stale.Epoch = 4
	noNode := assignment("no-node", "srv-3", digest)
	noNode.Epoch = 5
	noNode.Node = nil
	tests := []struct {
		a    *outpostv1.Assignment
		want string
	}{
		{otherDC, `node srv-1 is in datacenter "dc-2"; this gateway serves "dc-1"`},
		{stale, "stale epoch 4; the current leader's is 5"},
		{noNode, "invalid assignment: no node"},
	}
	for _, tt := range tests {
		cp.assign(t, tt.a)
		ack := cp.waitAck(t, tt.a.GetAssignmentId())
		if ack.GetAccepted() || ack.GetReason() != tt.want {
			t.Errorf("ack of %s = accepted %v, reason %q; want refused, %q", tt.a.GetAssignmentId(), ack.GetAccepted(), ack.GetReason(), tt.want)
		}
	}

	// Capacity: 1 running + 4 queued; the sixth is refused.
	dep.hold("busy-0", outpostv1.Step_STEP_CONNECT)
	for i := range 6 {
		a := assignment(fmt.Sprintf("c%d", i), fmt.Sprintf("busy-%d", i), digest)
		a.Epoch = 5
		cp.assign(t, a)
	}
	for i := range 5 {
		if ack := cp.waitAck(t, fmt.Sprintf("c%d", i)); !ack.GetAccepted() {
			t.Errorf("c%d refused: %s", i, ack.GetReason())
		}
	}
	if ack := cp.waitAck(t, "c5"); ack.GetAccepted() || !strings.HasPrefix(ack.GetReason(), "at capacity") {
		t.Errorf("c5: accepted %v, reason %q; want refused at capacity", ack.GetAccepted(), ack.GetReason())
	}
	dep.release("busy-0")
	for i := range 5 {
		cp.waitResult(t, fmt.Sprintf("c%d", i))
	}
	for _, id := range []string{"wrong-dc", "stale", "no-node", "c5"} {
		if cp.result(id) != nil {
			t.Errorf("refused assignment %s has a result", id)
		}
	}
	dep.mu.Lock()
	defer dep.mu.Unlock()
	if _, ok := dep.jobs["srv-1"]; ok {
		t.Error("the wrong-datacenter node was deployed")
	}
}

func TestRedeliveredAssignmentRunsOnce(t *testing.T) {
	cp := startFakeCP(t)
	digest := cp.addBlob([]byte("x"))
	dep := newFakeDeployer()
	dep.hold("srv-1", outpostv1.Step_STEP_CONNECT)
	startGateway(t, cp, dep, nil)
	cp.assign(t, assignment("a1", "srv-1", digest))
	waitFor(t, "srv-1 held", func() bool { return dep.isHeld("srv-1") })
	cp.with(func(f *fakeCP) { delete(f.acks, "a1") })
	cp.assign(t, assignment("a1", "srv-1", digest))
	if ack := cp.waitAck(t, "a1"); !ack.GetAccepted() {
		t.Errorf("re-delivered assignment refused: %s", ack.GetReason())
	}
	dep.release("srv-1")
	cp.waitResult(t, "a1")
	// After the result, a re-delivery is answered without a new deployment.
	cp.with(func(f *fakeCP) { delete(f.acks, "a1") })
	cp.assign(t, assignment("a1", "srv-1", digest))
	cp.waitAck(t, "a1")
	if evs := cp.eventsOf("a1"); len(evs) != 2*len(fakeSteps) {
		t.Errorf("%d events, want %d: the node was deployed more than once", len(evs), 2*len(fakeSteps))
	}
}

func TestCorruptArtifactFailsAtUpload(t *testing.T) {
	cp := startFakeCP(t)
	digest := cp.addBlob([]byte("the real artifact"))
	cp.with(func(f *fakeCP) { f.corrupt = true })
	dep := newFakeDeployer()
	g := startGateway(t, cp, dep, nil)
	cp.assign(t, assignment("a1", "srv-1", digest))
	res := cp.waitResult(t, "a1")
	if res.GetState() != outpostv1.NodeState_NODE_STATE_FAILED || res.GetStep() != outpostv1.Step_STEP_UPLOAD ||
		!strings.Contains(res.GetError(), "sha256 mismatch") {
		t.Errorf("result = %v, want FAILED at UPLOAD with a sha256 mismatch", res)
	}
	evs := cp.eventsOf("a1")
	if err := checkEventOrder(evs); err != nil || len(evs) != 2 || evs[1].GetPhase() != outpostv1.StepPhase_STEP_PHASE_FAILED {
		t.Errorf("events = %v (%v), want upload started and failed", evs, err)
	}
	dep.mu.Lock()
	_, deployed := dep.jobs["srv-1"]
	dep.mu.Unlock()
	if deployed {
		t.Error("the node was deployed with a corrupted artifact")
	}
	var files []string
	filepath.WalkDir(g.cfg.CacheDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Errorf("cache holds %q after a corrupted fetch, want nothing", files)
	}
}

func TestCancel(t *testing.T) {
	cp := startFakeCP(t)
	digest := cp.addBlob([]byte("x"))
	dep := newFakeDeployer()
	dep.hold("running", outpostv1.Step_STEP_UPLOAD)
	dep.hold("switched", outpostv1.Step_STEP_START)
	g := startGateway(t, cp, dep, func(c *Config) { c.Concurrency = 2 })
	cp.assign(t, assignment("running", "running", digest))
	cp.assign(t, assignment("switched", "switched", digest))
	cp.assign(t, assignment("queued", "queued", digest))
	waitFor(t, "both nodes held", func() bool { return dep.isHeld("running") && dep.isHeld("switched") })

	cp.cancel(t, "queued", "operator abort")
	res := cp.waitResult(t, "queued")
	if res.GetState() != outpostv1.NodeState_NODE_STATE_FAILED || res.GetError() != "cancelled before it started: operator abort" {
		t.Errorf("queued result = %v", res)
	}

	cp.cancel(t, "running", "operator abort")
	res = cp.waitResult(t, "running")
	if res.GetState() != outpostv1.NodeState_NODE_STATE_FAILED || res.GetStep() != outpostv1.Step_STEP_UPLOAD ||
		res.GetError() != "cancelled by the control plane: operator abort" {
		t.Errorf("running result = %v, want FAILED at UPLOAD, cancelled", res)
	}

	// Past the switch a cancel is ignored: the node finishes.
	cp.cancel(t, "switched", "operator abort")
	cp.cancel(t, "unknown", "ignored")
	cp.sync(t) // the cancels were handled: the node is still held and not cancelled
	g.mu.Lock()
	cancelled := g.tasks["switched"].cancelReason
	g.mu.Unlock()
	if !dep.isHeld("switched") || cancelled != "" {
		t.Fatalf("a node past the switch was cancelled (%q)", cancelled)
	}
	dep.release("switched")
	if res := cp.waitResult(t, "switched"); res.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		t.Errorf("switched result = %v, want SUCCEEDED", res)
	}
	dep.mu.Lock()
	defer dep.mu.Unlock()
	if _, ok := dep.jobs["queued"]; ok {
		t.Error("the cancelled queued assignment was deployed")
	}
}

func TestStreamDropMidDeployment(t *testing.T) {
	cp := startFakeCP(t)
	digest := cp.addBlob([]byte("x"))
	dep := newFakeDeployer()
	dep.hold("srv-1", outpostv1.Step_STEP_SWITCH)
	dep.hold("srv-2", outpostv1.Step_STEP_CONNECT)
	g := startGateway(t, cp, dep, func(c *Config) { c.Concurrency = 1 })
	cp.assign(t, assignment("a1", "srv-1", digest))
	cp.assign(t, assignment("a2", "srv-2", digest)) // queued behind a1
	waitFor(t, "srv-1 held", func() bool { return dep.isHeld("srv-1") })
	cp.waitAck(t, "a2")
	before := len(cp.eventsOf("a1"))

	cp.drop()
	waitFor(t, "second hello", func() bool { return cp.helloCount() == 2 })
	if got := cp.hello(1).GetActiveAssignmentIds(); !slices.Equal(got, []string{"a1"}) {
		t.Errorf("hello after reconnect lists %q, want [a1] (a2 had not started)", got)
	}
	dep.release("srv-1")
	res := cp.waitResult(t, "a1")
	if res.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		t.Errorf("result = %v", res)
	}
	evs := cp.eventsOf("a1")
	if err := checkEventOrder(evs); err != nil || len(evs) <= before {
		t.Errorf("events after reconnect: %d (was %d), order: %v", len(evs), before, err)
	}
	// a1's end frees the slot a2 would have taken, had it been kept.
	g.mu.Lock()
	kept := g.tasks["a2"] != nil
	g.mu.Unlock()
	if kept || cp.result("a2") != nil || dep.isHeld("srv-2") {
		t.Error("the queued assignment was kept although the stream broke before it started")
	}
}

func TestUnackedMessagesAreResent(t *testing.T) {
	cp := startFakeCP(t)
	digest := cp.addBlob([]byte("x"))
	// The control plane applies but neither acks nor remembers: after the
	// reconnect, its welcome says 0, and everything comes again.
	cp.with(func(f *fakeCP) { f.noAck, f.forget = true, true })
	g := startGateway(t, cp, newFakeDeployer(), nil)
	cp.assign(t, assignment("a1", "srv-1", digest))
	cp.waitResult(t, "a1")
	var seq uint64
	cp.with(func(f *fakeCP) {
		seq = f.resultSeqs["a1"]
		// Forget that anything was applied, as a control plane that lost
		// its state would.
		f.applied = 0
		delete(f.results, "a1")
		f.events = map[string][]*outpostv1.NodeStepEvent{}
	})
	cp.drop()
	res := cp.waitResult(t, "a1")
	cp.with(func(f *fakeCP) {
		if got := f.resultSeqs["a1"]; got != seq {
			t.Errorf("re-sent result has sequence %d, want the original %d", got, seq)
		}
	})
	if res.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		t.Errorf("result = %v", res)
	}
	if err := checkEventOrder(cp.eventsOf("a1")); err != nil {
		t.Errorf("re-sent events: %v", err)
	}

	// A welcome that acknowledges everything empties the outbox without a
	// single message sent again.
	cp.with(func(f *fakeCP) { f.noAck, f.forget = false, false })
	if g.out.pending() == 0 {
		t.Fatal("outbox is empty although nothing was acknowledged")
	}
	cp.drop()
	waitFor(t, "outbox empty", func() bool { return g.out.pending() == 0 })
	cp.with(func(f *fakeCP) {
		if f.dupes != 0 {
			t.Errorf("%d messages re-sent although the welcome acknowledged them", f.dupes)
		}
	})
}

func TestAckedMessagesAreNotResent(t *testing.T) {
	cp := startFakeCP(t)
	digest := cp.addBlob([]byte("x"))
	g := startGateway(t, cp, newFakeDeployer(), nil)
	cp.assign(t, assignment("a1", "srv-1", digest))
	cp.waitResult(t, "a1")
	waitFor(t, "outbox empty", func() bool { return g.out.pending() == 0 })
	cp.drop()
	waitFor(t, "second hello", func() bool { return cp.helloCount() == 2 })
	cp.assign(t, assignment("a2", "srv-2", digest))
	cp.waitResult(t, "a2")
	cp.with(func(f *fakeCP) {
		if f.dupes != 0 {
			t.Errorf("control plane saw %d duplicate messages, want 0", f.dupes)
		}
	})
}

func TestTraceContextPropagates(t *testing.T) {
	cp := startFakeCP(t)
	digest := cp.addBlob([]byte("x"))
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	dep := newFakeDeployer()
	startGateway(t, cp, dep, func(c *Config) { c.TracerProvider = tp })

	// The control plane's span, as it would be sent.
	parentCtx, parent := tp.Tracer("controlplane").Start(context.Background(), "batch")
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(parentCtx, carrier)
	parent.End()
	a := assignment("a1", "srv-1", digest)
	a.TraceContext = carrier
	cp.assign(t, a)
	b := assignment("a2", "srv-2", digest) // no trace context: a fresh trace
	cp.assign(t, b)
	cp.waitResult(t, "a1")
	cp.waitResult(t, "a2")

	want := parent.SpanContext().TraceID()
	dep.mu.Lock()
	got1, got2 := dep.spans["srv-1"], dep.spans["srv-2"]
	dep.mu.Unlock()
	if got1.TraceID() != want {
		t.Errorf("deployer ctx trace id = %v, want the control plane's %v", got1.TraceID(), want)
	}
	if got2.TraceID() == want {
		t.Error("an assignment without trace context joined another assignment's trace")
	}
	var fetch []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "gateway.fetch_artifact" {
			fetch = append(fetch, s)
		}
	}
	if len(fetch) != 2 {
		t.Fatalf("%d gateway.fetch_artifact spans, want 2", len(fetch))
	}
	if !slices.ContainsFunc(fetch, func(s sdktrace.ReadOnlySpan) bool {
		return s.SpanContext().TraceID() == want && s.Parent().SpanID() == parent.SpanContext().SpanID()
	}) {
		t.Errorf("no fetch span is a child of the control plane's span %v", parent.SpanContext())
	}
}

func TestMetricsEndpoint(t *testing.T) {
	cp := startFakeCP(t)
	digest := cp.addBlob([]byte("x"))
	dep := newFakeDeployer()
	dep.fail["srv-2"] = deployer.Result{State: outpostv1.NodeState_NODE_STATE_ROLLED_BACK, Step: outpostv1.Step_STEP_HEALTH, Err: errTest}
	g := startGateway(t, cp, dep, func(c *Config) { c.MetricsListen = "127.0.0.1:0" })
	cp.assign(t, assignment("a1", "srv-1", digest))
	cp.assign(t, assignment("a2", "srv-2", digest))
	cp.waitResult(t, "a1")
	if r := cp.waitResult(t, "a2"); r.GetError() != errTest.Error() {
		t.Errorf("a2 error = %q, want %q", r.GetError(), errTest)
	}
	waitFor(t, "metrics address", func() bool { return g.MetricsAddr() != "" })
	resp, err := http.Get("http://" + g.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"outpost_gateway_connected 1",
		`outpost_node_deployments_total{app="app",datacenter="dc-1",state="succeeded"} 1`,
		`outpost_node_deployments_total{app="app",datacenter="dc-1",state="rolled_back"} 1`,
		`outpost_node_deployment_duration_seconds_count{app="app",datacenter="dc-1",state="rolled_back"} 1`,
		`outpost_step_duration_seconds_count{result="succeeded",step="upload"} 2`,
		`outpost_ssh_failures_total{class="host_key"} 0`,
		"outpost_gateway_deployments_in_flight 0",
		"outpost_gateway_artifact_cache_misses_total 1",
		"outpost_gateway_artifact_cache_hits_total 1",
		"outpost_gateway_artifact_fetched_bytes_total 1",
		"outpost_gateway_artifact_cache_bytes 1",
		"outpost_gateway_artifact_cache_entries 1",
		"outpost_gateway_artifact_cache_limit_bytes 2.147483648e+10",
		"outpost_gateway_artifact_cache_evictions_total 0",
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestUnreachableControlPlaneIsLoggedOnce(t *testing.T) {
	cp := startFakeCP(t)
	var logs syncBuffer
	g := startGateway(t, cp, newFakeDeployer(), func(c *Config) {
		c.ControlPlane = "127.0.0.1:1" // nothing listens on port 1
		c.MinBackoff, c.MaxBackoff = time.Millisecond, 2*time.Millisecond
		c.Logger = slogTo(&logs)
	})
	waitFor(t, "20 attempts", func() bool { return strings.Count(logs.String(), "control plane still unreachable") >= 20 })
	if err := g.stop(); err != nil {
		t.Errorf("Run = %v", err)
	}
	if n := strings.Count(logs.String(), "level=WARN msg=\"cannot reach the control plane"); n != 1 {
		t.Errorf("warned %d times about the unreachable control plane, want once:\n%s", n, logs.String())
	}
}

func TestShutdownFinishesDeploymentPastTheSwitch(t *testing.T) {
	cp := startFakeCP(t)
	digest := cp.addBlob([]byte("x"))
	dep := newFakeDeployer()
	dep.hold("early", outpostv1.Step_STEP_UPLOAD)
	dep.hold("late", outpostv1.Step_STEP_HEALTH)
	g := startGateway(t, cp, dep, nil)
	cp.assign(t, assignment("early", "early", digest))
	cp.assign(t, assignment("late", "late", digest))
	waitFor(t, "both held", func() bool { return dep.isHeld("early") && dep.isHeld("late") })
	stopped := make(chan error, 1)
	go func() { stopped <- g.stop() }()
	// The early node is cancelled before the switch; the late one keeps
	// Run waiting.
	waitFor(t, "early cancelled", func() bool { return g.activeCount() == 1 })
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) while a node past the switch was deploying", err)
	case <-time.After(50 * time.Millisecond):
	}
	dep.release("late")
	if err := <-stopped; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if res := cp.result("late"); res.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		t.Errorf("late result = %v, want SUCCEEDED delivered before Run returned", res)
	}
	// Interrupted by the shutdown, not failed: without a result the control
	// plane hands the untouched node out again.
	if res := cp.result("early"); res != nil {
		t.Errorf("early result = %v, want none", res)
	}
}

func TestJobOf(t *testing.T) {
	a := assignment("a1", "srv-1", digestOf([]byte("x")))
	a.Deploy = &outpostv1.DeploySpec{
		Path:               "/srv/app",
		Layout:             outpostv1.Layout_LAYOUT_RELEASES,
		KeepReleases:       4,
		MaxDiskUsedPercent: 80,
		MinFreeBytes:       1 << 20,
		MaxUnpackedBytes:   2 << 30,
		AllowSetuid:        true,
		Hooks:              &outpostv1.Hooks{BeforeInstall: "true", Stop: "sh bin/stop", AfterInstall: "true", Start: "sh bin/start"},
		Health: &outpostv1.HealthCheck{
			Check:    &outpostv1.HealthCheck_Http{Http: &outpostv1.HttpHealthCheck{Port: 18080, Path: "/health", ExpectStatus: 204}},
			Timeout:  durationpb.New(5 * time.Second),
			Interval: durationpb.New(100 * time.Millisecond),
		},
	}
	a.Owner = ""
	got, err := jobOf(a, "gw-1")
	if err != nil {
		t.Fatal(err)
	}
	want := deployer.Job{
		Node: a.GetNode(), Release: a.GetRelease(), RolloutID: "rollout-1", Owner: "gw-1", Epoch: 1, AssignmentID: "a1",
		Spec: deployer.Spec{
			Path:         "/srv/app",
			KeepReleases: 4,
			Precheck:     deployer.Precheck{MaxDiskUsedPercent: 80, MinFreeBytes: 1 << 20},
			Hooks:        deployer.Hooks{BeforeInstall: "true", Stop: "sh bin/stop", AfterInstall: "true", Start: "sh bin/start"},
			Health: deployer.Health{
				HTTP:    &deployer.HTTPCheck{Port: 18080, Path: "/health", ExpectStatus: 204},
				Timeout: 5 * time.Second, Interval: 100 * time.Millisecond,
			},
			TarLimits: tarscan.Limits{
				MaxUnpackedBytes: 2 << 30, AllowSetuid: true, MaxRatio: tarscan.DefaultMaxRatio,
				RatioFloor: tarscan.DefaultRatioFloor, MaxEntries: tarscan.DefaultMaxEntries,
			},
		},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("jobOf (-want +got):\n%s", diff)
	}

	a.Deploy.Layout = outpostv1.Layout_LAYOUT_INPLACE
	if job, err := jobOf(a, "gw-1"); err != nil || job.Spec.Layout != deployer.LayoutInplace {
		t.Errorf("jobOf(inplace) = layout %v, %v; want LayoutInplace", job.Spec.Layout, err)
	}
	a.Deploy.Layout = outpostv1.Layout(99)
	if _, err := jobOf(a, "gw-1"); err == nil || !strings.Contains(err.Error(), "deploy spec") {
		t.Errorf("jobOf(unknown layout) = %v, want a deploy spec error", err)
	}
}
