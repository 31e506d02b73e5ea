package gateway

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outposthq/outpost/gateway/deployer"
	"github.com/outposthq/outpost/internal/simfleet"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// fleetEnv is a fake control plane, an in-process SSH fleet, a release
// stored in the control plane, and a gateway with the real deployer.
type fleetEnv struct {
	cp      *fakeCP
	fleet   *simfleet.Fleet
	release simfleet.Release
	gw      *runningGateway
	counter *countingDeployer
}

func startFleetEnv(t *testing.T, hosts int, mutate func(*Config)) *fleetEnv {
	t.Helper()
	signer := testSigner(t)
	fleet, err := simfleet.Start(context.Background(), simfleet.Config{
		Hosts: hosts, Dir: t.TempDir(), ClientKeys: []ssh.PublicKey{signer.PublicKey()}, ServicePath: "app",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fleet.Close(); err != nil {
			t.Errorf("fleet Close: %v", err)
		}
	})
	knownHosts := filepath.Join(t.TempDir(), "known_hosts")
	if err := fleet.WriteKnownHosts(knownHosts); err != nil {
		t.Fatal(err)
	}
	rel, err := simfleet.BuildRelease(t.TempDir(), "1.0.0", true)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(rel.Path)
	if err != nil {
		t.Fatal(err)
	}
	e := &fleetEnv{cp: startFakeCP(t), fleet: fleet, release: rel}
	if d := e.cp.addBlob(data); d != rel.SHA256 {
		t.Fatalf("release digest %s, simfleet says %s", d, rel.SHA256)
	}
	e.gw = startGatewayWith(t, e.cp, func(real nodeDeployer) nodeDeployer {
		e.counter = &countingDeployer{inner: real}
		return e.counter
	}, func(c *Config) {
		c.SSH = SSHConfig{Signers: []ssh.Signer{signer}, KnownHostsFiles: []string{knownHosts}}
		if mutate != nil {
			mutate(c)
		}
	})
	return e
}

// assignment is a deployment of the env's release to host h, following
// the demo conventions.
func (e *fleetEnv) assignment(id, release string, h *simfleet.Host) *outpostv1.Assignment {
	return &outpostv1.Assignment{
		AssignmentId: id,
		RolloutId:    "rollout-" + release,
		Epoch:        1,
		Node:         &outpostv1.Node{Id: h.Name, Address: h.Addr, Datacenter: "dc-1", User: "deploy"},
		Release: &outpostv1.Release{Id: release, App: "demo", Artifact: &outpostv1.Artifact{
			Sha256: e.release.SHA256, Size: e.release.Size, Name: "demo.tar.gz", Unpack: outpostv1.Unpack_UNPACK_TAR,
		}},
		Deploy: &outpostv1.DeploySpec{
			Path:               "app",
			Layout:             outpostv1.Layout_LAYOUT_RELEASES,
			KeepReleases:       3,
			MaxDiskUsedPercent: 100, // the test machine's disk may be full-ish
			Hooks:              &outpostv1.Hooks{Start: "sh bin/start", Stop: "sh bin/stop"},
			Health: &outpostv1.HealthCheck{
				Check:    &outpostv1.HealthCheck_Http{Http: &outpostv1.HttpHealthCheck{Port: simfleet.DefaultHealthPort, Path: "/health", ExpectStatus: 200}},
				Timeout:  durationpb.New(10 * time.Second),
				Interval: durationpb.New(20 * time.Millisecond),
			},
		},
		Owner: "cp-test/rollout-" + release,
		Stage: "all",
	}
}

// current is the release host h's app/current points at, or "".
func current(h *simfleet.Host) string {
	target, err := os.Readlink(filepath.Join(h.Root, "app", "current"))
	if err != nil {
		return ""
	}
	return filepath.Base(target)
}

// countingDeployer measures how many deployments run at once.
type countingDeployer struct {
	inner nodeDeployer

	mu      sync.Mutex
	running int // guarded by mu
	most    int // guarded by mu
}

func (c *countingDeployer) Deploy(ctx context.Context, job deployer.Job, emit func(*outpostv1.NodeStepEvent)) deployer.Result {
	c.mu.Lock()
	c.running++
	c.most = max(c.most, c.running)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running--
		c.mu.Unlock()
	}()
	return c.inner.Deploy(ctx, job, emit)
}

func (c *countingDeployer) max() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.most
}

func TestFleetRollout(t *testing.T) {
	e := startFleetEnv(t, 5, func(c *Config) { c.Concurrency = 2 })
	hosts := e.fleet.Hosts()
	for _, h := range hosts {
		// Slow commands keep deployments overlapping, so the bound is
		// really exercised.
		h.SetFaults(simfleet.Faults{ExecDelay: 30 * time.Millisecond})
	}
	for round, release := range []string{"r1-" + e.release.SHA256[:8], "r2-" + e.release.SHA256[:8]} {
		for i, h := range hosts {
			e.cp.assign(t, e.assignment(fmt.Sprintf("%s-%d", release, i), release, h))
		}
		for i, h := range hosts {
			id := fmt.Sprintf("%s-%d", release, i)
			res := e.cp.waitResult(t, id)
			if res.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED || res.GetRelease() != release {
				t.Fatalf("%s: %v", id, res)
			}
			if round == 1 && res.GetPreviousRelease() != "r1-"+e.release.SHA256[:8] {
				t.Errorf("%s: previous release %q, want the first rollout's", id, res.GetPreviousRelease())
			}
			evs := e.cp.eventsOf(id)
			if err := checkEventOrder(evs); err != nil {
				t.Errorf("%s: %v", id, err)
			}
			var steps []outpostv1.Step
			for _, ev := range evs {
				if ev.GetPhase() == outpostv1.StepPhase_STEP_PHASE_SUCCEEDED {
					steps = append(steps, ev.GetStep())
				}
			}
			for _, want := range []outpostv1.Step{outpostv1.Step_STEP_CONNECT, outpostv1.Step_STEP_SWITCH, outpostv1.Step_STEP_HEALTH, outpostv1.Step_STEP_UNLOCK} {
				if !slices.Contains(steps, want) {
					t.Errorf("%s: no successful %v among %v", id, want, steps)
				}
			}
			if got := current(h); got != release {
				t.Errorf("%s: current -> %q, want %q", h.Name, got, release)
			}
		}
		// One fetch for all nodes of both rollouts.
		if got := e.cp.fetchCount(); got != 1 {
			t.Errorf("after rollout %d: FetchArtifact calls = %d, want 1", round+1, got)
		}
	}
	if got := e.counter.max(); got != 2 {
		t.Errorf("at most %d deployments ran at once, want 2 (the Concurrency)", got)
	}
}

func TestFleetCorruptedFetch(t *testing.T) {
	e := startFleetEnv(t, 1, nil)
	e.cp.with(func(f *fakeCP) { f.corrupt = true })
	h := e.fleet.Hosts()[0]
	e.cp.assign(t, e.assignment("a1", "r1", h))
	res := e.cp.waitResult(t, "a1")
	if res.GetState() != outpostv1.NodeState_NODE_STATE_FAILED || res.GetStep() != outpostv1.Step_STEP_UPLOAD ||
		!strings.Contains(res.GetError(), "sha256 mismatch") || !strings.Contains(res.GetError(), e.release.SHA256) {
		t.Errorf("result = %v, want FAILED at UPLOAD naming the artifact and the mismatch", res)
	}
	if st := h.Stats(); st.Connections != 0 {
		t.Errorf("the node got %d SSH connections for a corrupted artifact, want 0", st.Connections)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.gw.cfg.CacheDir, "sha256")); len(entries) != 0 {
		t.Errorf("cache holds %d artifacts after a corrupted fetch, want 0", len(entries))
	}
	// Once the control plane serves good bytes, the next assignment works.
	e.cp.with(func(f *fakeCP) { f.corrupt = false })
	e.cp.assign(t, e.assignment("a2", "r1", h))
	if res := e.cp.waitResult(t, "a2"); res.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		t.Errorf("after the fault: %v", res)
	}
}

func TestFleetStreamDropMidDeployment(t *testing.T) {
	e := startFleetEnv(t, 1, nil)
	h := e.fleet.Hosts()[0]
	a := e.assignment("a1", "r1", h)
	// The health check passes only once the test says so, holding the
	// node past the switch for as long as the test needs.
	a.Deploy.Health = &outpostv1.HealthCheck{
		Check:    &outpostv1.HealthCheck_Command{Command: "test -f ../../go"},
		Timeout:  durationpb.New(20 * time.Second),
		Interval: durationpb.New(20 * time.Millisecond),
	}
	e.cp.assign(t, a)
	waitFor(t, "the switch", func() bool { return current(h) == "r1" })

	e.cp.drop()
	waitFor(t, "second hello", func() bool { return e.cp.helloCount() == 2 })
	if got := e.cp.hello(1).GetActiveAssignmentIds(); !slices.Equal(got, []string{"a1"}) {
		t.Errorf("hello after reconnect lists %q, want [a1]", got)
	}
	if e.cp.result("a1") != nil {
		t.Fatal("result arrived before the node was allowed to become healthy")
	}
	if err := os.WriteFile(filepath.Join(h.Root, "app", "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res := e.cp.waitResult(t, "a1")
	if res.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED || res.GetRelease() != "r1" {
		t.Errorf("result = %v", res)
	}
	if err := checkEventOrder(e.cp.eventsOf("a1")); err != nil {
		t.Errorf("events across the reconnect: %v", err)
	}
}

func TestFleetCancelBeforeSwitchLeavesNodeAsItWas(t *testing.T) {
	e := startFleetEnv(t, 1, nil)
	h := e.fleet.Hosts()[0]
	a := e.assignment("a1", "r1", h)
	a.Deploy.Hooks.BeforeInstall = "touch ../../waiting; while [ ! -f ../../go ]; do sleep 0.02; done"
	e.cp.assign(t, a)
	waitFor(t, "before_install running", func() bool {
		_, err := os.Stat(filepath.Join(h.Root, "app", "waiting"))
		return err == nil
	})
	e.cp.cancel(t, "a1", "operator abort")
	res := e.cp.waitResult(t, "a1")
	if res.GetState() != outpostv1.NodeState_NODE_STATE_FAILED || !strings.Contains(res.GetError(), "operator abort") {
		t.Errorf("result = %v, want FAILED, cancelled", res)
	}
	if got := current(h); got != "" {
		t.Errorf("current -> %q after a cancel before the switch, want none", got)
	}
	for _, p := range []string{"releases/r1", "releases/r1.partial", ".outpost/lock"} {
		if _, err := os.Stat(filepath.Join(h.Root, "app", p)); err == nil {
			t.Errorf("%s left behind on the node", p)
		}
	}
}

func TestFleetTraceJoinsControlPlaneTrace(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	e := startFleetEnv(t, 1, func(c *Config) { c.TracerProvider = tp })

	parentCtx, parent := tp.Tracer("controlplane").Start(context.Background(), "controlplane.batch")
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(parentCtx, carrier)
	parent.End()
	a := e.assignment("a1", "r1", e.fleet.Hosts()[0])
	a.TraceContext = carrier
	e.cp.assign(t, a)
	if res := e.cp.waitResult(t, "a1"); res.GetState() != outpostv1.NodeState_NODE_STATE_SUCCEEDED {
		t.Fatalf("result = %v", res)
	}

	want := parent.SpanContext().TraceID()
	var deploySpan sdktrace.ReadOnlySpan
	steps := 0
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() != want {
			t.Errorf("span %q has trace id %v, want the control plane's %v", s.Name(), s.SpanContext().TraceID(), want)
		}
		switch {
		case s.Name() == "deployer.deploy":
			deploySpan = s
		case strings.HasPrefix(s.Name(), "deployer."):
			steps++
		}
	}
	if deploySpan == nil {
		t.Fatal("no deployer.deploy span")
	}
	if deploySpan.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("deployer.deploy's parent is %v, want the control plane's span %v", deploySpan.Parent().SpanID(), parent.SpanContext().SpanID())
	}
	if steps < 5 {
		t.Errorf("%d step spans, want one per step", steps)
	}
}
