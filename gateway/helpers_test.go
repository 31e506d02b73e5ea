package gateway

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/gateway/deployer"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// fakeDeployer stands in for the node deployer where SSH is not the point:
// it walks fakeSteps, emitting real-looking events, and can hold a node
// before a step until the test releases it or ctx ends.
type fakeDeployer struct {
	mu      sync.Mutex
	running int                          // guarded by mu
	most    int                          // guarded by mu: highest running seen
	holdAt  map[string]outpostv1.Step    // guarded by mu: node -> step to hold before
	gates   map[string]chan struct{}     // guarded by mu: node -> closed to release
	held    map[string]bool              // guarded by mu: node is holding now
	jobs    map[string]deployer.Job      // guarded by mu: by node
	spans   map[string]trace.SpanContext // guarded by mu: remote parent seen, by node
	content map[string][]byte            // guarded by mu: artifact bytes seen, by node
	fail    map[string]deployer.Result   // guarded by mu: node -> result instead of success
}

var fakeSteps = []outpostv1.Step{
	outpostv1.Step_STEP_CONNECT, outpostv1.Step_STEP_LOCK, outpostv1.Step_STEP_UPLOAD,
	outpostv1.Step_STEP_SWITCH, outpostv1.Step_STEP_START, outpostv1.Step_STEP_HEALTH, outpostv1.Step_STEP_UNLOCK,
}

func newFakeDeployer() *fakeDeployer {
	return &fakeDeployer{
		holdAt:  make(map[string]outpostv1.Step),
		gates:   make(map[string]chan struct{}),
		held:    make(map[string]bool),
		jobs:    make(map[string]deployer.Job),
		spans:   make(map[string]trace.SpanContext),
		content: make(map[string][]byte),
		fail:    make(map[string]deployer.Result),
	}
}

// hold makes node wait before step until release.
func (d *fakeDeployer) hold(node string, step outpostv1.Step) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.holdAt[node] = step
	d.gates[node] = make(chan struct{})
}

func (d *fakeDeployer) release(node string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	close(d.gates[node])
}

func (d *fakeDeployer) isHeld(node string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.held[node]
}

func (d *fakeDeployer) Deploy(ctx context.Context, job deployer.Job, emit func(*outpostv1.NodeStepEvent)) deployer.Result {
	node := job.Node.GetId()
	content, _ := os.ReadFile(job.ArtifactPath)
	d.mu.Lock()
	d.running++
	d.most = max(d.most, d.running)
	d.jobs[node] = job
	d.spans[node] = trace.SpanContextFromContext(ctx)
	d.content[node] = content
	holdAt, gate := d.holdAt[node], d.gates[node]
	failRes, fails := d.fail[node]
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.running--
		d.mu.Unlock()
	}()
	seq := uint64(0)
	send := func(step outpostv1.Step, phase outpostv1.StepPhase, err error) {
		seq++
		ev := &outpostv1.NodeStepEvent{NodeId: node, RolloutId: job.RolloutID, Step: step, Phase: phase, Seq: seq, Time: timestamppb.Now()}
		if phase != outpostv1.StepPhase_STEP_PHASE_STARTED {
			ev.Duration = durationpb.New(time.Millisecond)
		}
		if err != nil {
			ev.Error = err.Error()
		}
		emit(ev)
	}
	for _, step := range fakeSteps {
		if step == holdAt && gate != nil {
			d.mu.Lock()
			d.held[node] = true
			d.mu.Unlock()
			select {
			case <-gate:
			case <-ctx.Done():
				err := context.Cause(ctx)
				send(step, outpostv1.StepPhase_STEP_PHASE_STARTED, nil)
				send(step, outpostv1.StepPhase_STEP_PHASE_FAILED, err)
				return deployer.Result{State: outpostv1.NodeState_NODE_STATE_FAILED, Step: step, Err: err}
			}
			d.mu.Lock()
			d.held[node] = false
			d.mu.Unlock()
		}
		send(step, outpostv1.StepPhase_STEP_PHASE_STARTED, nil)
		send(step, outpostv1.StepPhase_STEP_PHASE_SUCCEEDED, nil)
	}
	if fails {
		return failRes
	}
	return deployer.Result{State: outpostv1.NodeState_NODE_STATE_SUCCEEDED, Step: outpostv1.Step_STEP_UNLOCK, Release: job.Release.GetId()}
}

// testSigner is an SSH key for Configs; the fake deployer never uses it.
func testSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// runningGateway is a Gateway whose Run is going on in the background.
type runningGateway struct {
	*Gateway
	stop func() error // cancels Run and waits for it
}

// startGateway runs a gateway against cp in dc "dc-1"; dep replaces the
// real deployer unless nil.
func startGateway(t *testing.T, cp *fakeCP, dep nodeDeployer, mutate func(*Config)) *runningGateway {
	t.Helper()
	return startGatewayWith(t, cp, func(real nodeDeployer) nodeDeployer {
		if dep != nil {
			return dep
		}
		return real
	}, mutate)
}

// startGatewayWith is startGateway with the deployer replaced by
// wrap(the real deployer).
func startGatewayWith(t *testing.T, cp *fakeCP, wrap func(real nodeDeployer) nodeDeployer, mutate func(*Config)) *runningGateway {
	t.Helper()
	cfg := Config{
		ControlPlane: cp.addr,
		Name:         "gw-1",
		Datacenter:   "dc-1",
		Concurrency:  3,
		CacheDir:     t.TempDir(),
		SSH:          SSHConfig{User: "deploy", Signers: []ssh.Signer{testSigner(t)}},
		Logger:       testLogger(t),
		MinBackoff:   5 * time.Millisecond,
		MaxBackoff:   50 * time.Millisecond,
		Version:      "test",
		// The fake control plane serves plaintext; the real one's TLS is
		// tested end to end.
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.deploy = wrap(g.deploy)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return within 30s of cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run = %v, want nil after cancel", err)
		}
	})
	return &runningGateway{Gateway: g, stop: stop}
}

// testLogger writes to the test log, so a failing test shows what the
// gateway said.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// syncBuffer is a log sink tests read from.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// assignment builds an assignment of node to gateway dc-1 for the
// artifact with digest.
func assignment(id, node, digest string) *outpostv1.Assignment {
	return &outpostv1.Assignment{
		AssignmentId: id,
		RolloutId:    "rollout-1",
		Epoch:        1,
		Node:         &outpostv1.Node{Id: node, Address: "127.0.0.1:1", Datacenter: "dc-1", User: "deploy"},
		Release: &outpostv1.Release{Id: "r1-" + digest[:8], App: "app", Artifact: &outpostv1.Artifact{
			Sha256: digest, Size: 0, Name: "app.tar.gz", Unpack: outpostv1.Unpack_UNPACK_TAR,
		}},
		Deploy: &outpostv1.DeploySpec{Path: "app", Layout: outpostv1.Layout_LAYOUT_RELEASES, KeepReleases: 3, MaxDiskUsedPercent: 95},
		Owner:  "cp-1/rollout-1",
		Stage:  "all",
	}
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

var errTest = errors.New("test failure")

func nodeName(i int) string { return fmt.Sprintf("srv-%03d", i) }

func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
